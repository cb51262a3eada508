"""The stack uses PostgreSQL, Redis and S3 of one's own when their URLs are given."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import httpx
from social_common.fleet import roster
from social_stack.local import Endpoints, Ports, Stack


def test_a_stack_given_urls_starts_only_the_services_and_gateway(stack: Endpoints) -> None:
    external = {
        "DATABASE_URL": stack.database_admin_url,
        "REDIS_URL": stack.redis_url,
        "S3_ENDPOINT_URL": stack.s3_endpoint_url,
        "S3_ACCESS_KEY_ID": stack.s3_access_key,
        "S3_SECRET_ACCESS_KEY": stack.s3_secret_key,
    }
    run_dir = Path(tempfile.mkdtemp(prefix="social-external-"))
    second = Stack(run_dir, Ports.free(), tie_to_parent=True, durable=False, external=external)
    try:
        endpoints = second.start()
        started = sorted(c.name for c in second.components)
        web = ["web"] if endpoints.web_url else []
        assert started == sorted([*roster().names, "envoy", *web])
        assert endpoints.redis_url == stack.redis_url
        assert httpx.get(f"{endpoints.gateway_url}/api/v1/posts/healthz").status_code == 200
        ready = httpx.get(f"http://{endpoints.services_http['posts']}/readyz").json()
        assert ready["checks"] == {"redis": "ok", "postgres": "ok", "revocations": "ok"}
    finally:
        second.stop()
        shutil.rmtree(run_dir, ignore_errors=True)

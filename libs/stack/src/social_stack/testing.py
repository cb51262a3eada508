"""Helpers for tests against a running stack.

Every client speaks from its own loopback address (all of 127.0.0.0/8 is
local), so the per-address rate limits of one test never spend another's.
"""

from __future__ import annotations

import itertools
import secrets
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import boto3
import httpx
import redis
import redis.asyncio as aioredis
from social.events.v1.events_pb2 import Envelope
from social_common.db import create_pool
from social_common.events import stream_for
from social_common.redis import as_text, create_sync_redis, stream_position
from social_common.revocation import RevokedSessions
from social_common.runner import Resources, ServiceSpec, Wiring
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from social_stack.local import Endpoints

_addresses = itertools.count(1)


def fresh_address() -> str:
    """A loopback address no other client of this session has used."""
    n = next(_addresses)
    return f"127.1.{n // 250 % 250}.{n % 250 + 1}"


def client(base_url: str, address: str | None = None) -> httpx.Client:
    """An HTTP client bound to ``address`` (a fresh one by default), no proxies."""
    return httpx.Client(
        base_url=base_url,
        transport=httpx.HTTPTransport(local_address=address or fresh_address()),
        timeout=15.0,
        trust_env=False,
    )


@dataclass
class Account:
    id: str
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def create_account(gateway_url: str, password: str | None = None) -> Account:
    """Registers a new account through the gateway and logs it in."""
    username = unique_name()
    email = f"{username}@example.com"
    password = password or f"pw-{secrets.token_hex(8)}"
    with client(gateway_url) as http:
        registered = http.post(
            "/api/v1/users/register",
            json={"username": username, "email": email, "password": password},
        )
        assert registered.status_code == 201, registered.text
        session = http.post("/api/v1/users/login", json={"email": email, "password": password})
        assert session.status_code == 200, session.text
    tokens = session.json()
    return Account(
        id=registered.json()["id"],
        username=username,
        email=email,
        password=password,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Polls ``condition`` until it holds: for states of other processes,
    which this one cannot await."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:.0f}s: {what or 'condition'}")
        time.sleep(0.02)


def answers(url: str, status: int) -> Callable[[], bool]:
    """A condition: a GET of ``url`` answers ``status`` (no answer counts as no)."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1, trust_env=False).status_code == status
        except httpx.TransportError:
            return False

    return check


def png(width: int = 16, height: int = 16, rgb: tuple[int, int, int] = (200, 80, 40)) -> bytes:
    """A valid PNG of one colour, built by hand (no imaging library needed)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = (b"\x00" + bytes(rgb) * width) * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def upload_image(gateway_url: str, account: Account) -> dict[str, Any]:
    """Uploads a small image as ``account``; the media document."""
    with client(gateway_url) as http:
        response = http.post(
            "/api/v1/media", headers=account.auth, files={"file": ("p.png", png(), "image/png")}
        )
    assert response.status_code == 201, response.text
    media: dict[str, Any] = response.json()
    return media


def create_post(gateway_url: str, account: Account, caption: str = "hello") -> dict[str, Any]:
    """Posts a small image with ``caption`` as ``account``; the post."""
    media_id = upload_image(gateway_url, account)["id"]
    with client(gateway_url) as http:
        response = http.post(
            "/api/v1/posts",
            headers=account.auth,
            json={"caption": caption, "media_ids": [media_id]},
        )
    assert response.status_code == 201, response.text
    post: dict[str, Any] = response.json()
    return post


def publish(events: redis.Redis, envelope: Envelope) -> tuple[str, str]:
    """Adds ``envelope`` to its stream as an outbox relay would, skipping the
    outbox: the stream and the entry's id, for :func:`event_handled`."""
    stream = stream_for(envelope.type, envelope.key)
    return stream, as_text(events.xadd(stream, {"envelope": envelope.SerializeToString()}))


def event_handled(
    events: redis.Redis, published: tuple[str, str], group: str
) -> Callable[[], bool]:
    """A condition: ``group`` has read the stream entry ``published`` and
    acknowledged it (its handler succeeded; a failure would leave it pending)."""
    stream, entry_id = published

    def check() -> bool:
        groups: Any = events.xinfo_groups(stream)
        found = next((g for g in groups if as_text(g["name"]) == group), None)
        if found is None:
            return False
        if stream_position(as_text(found["last-delivered-id"])) < stream_position(entry_id):
            return False
        return not events.xpending_range(stream, group, entry_id, entry_id, 1)

    return check


def published_events(redis_url: str, event_type: str, key: str) -> list[Envelope]:
    """The envelopes of ``event_type`` on its stream whose key is ``key``, oldest first."""
    with create_sync_redis(redis_url) as client:
        entries: Any = client.xrange(stream_for(event_type, key))
    found = [Envelope.FromString(fields[b"envelope"]) for _, fields in entries]
    return [e for e in found if e.key == key]


async def wire_offline(service: str) -> Wiring:
    """A service's wiring, as its runner makes it, with nothing reachable
    behind it: wiring does no I/O (pools open and clients connect on first
    use), so its routes, handlers and tasks can be inspected. Call it inside
    an event loop: gRPC channels need one."""
    spec: ServiceSpec[Any] = entry_points(group="social.services")[service].load()()
    redis_client = aioredis.Redis()
    resources = Resources(
        settings=spec.settings_class.from_env(service),
        redis=redis_client,
        db=create_pool("postgresql://unused", min_size=1, max_size=1, name=service),
        revoked=RevokedSessions(redis_client),
    )
    return spec.wire(resources)


def bucket_keys(stack: Endpoints) -> set[str]:
    """Every key in the stack's bucket."""
    s3 = boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint_url,
        aws_access_key_id=stack.s3_access_key,
        aws_secret_access_key=stack.s3_secret_key,
        region_name="us-east-1",
    )
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.s3_bucket):
        keys |= {item["Key"] for item in page.get("Contents", [])}
    return keys


def close_of(ws: ClientConnection, timeout: float = 15.0) -> tuple[int, str] | None:
    """The code and reason the server closes ``ws`` with, reading whatever
    comes until then; None when the connection ends without a close frame."""
    try:
        while True:
            ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None


def stack_cli(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m social_stack --run-dir run_dir *args`` (as make runs it), finished."""
    return subprocess.run(
        [sys.executable, "-m", "social_stack", "--run-dir", str(run_dir), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )

"""Idempotency-Key for POSTs: a retry gets the first response, not a second effect.

The first request with a key takes a lease in Redis (SET NX) and, once its
handler answers, stores the response there for ``ttl`` (24 h). A retry with
the same key and the same request is answered from the store (with
``Idempotent-Replayed: true``); the same key with a different request is a
422; a duplicate arriving while the first still runs is a 409. Server errors
(5xx) and rate limits (429) are not stored: a retry runs again.

Keys are scoped by the caller (a user id, say), so two callers' keys never
meet.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable

import msgspec
import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import Response

from social_common.errors import Problem, problem_response
from social_common.models import encode

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
# Response headers worth replaying; the rest are recomputed per request.
_REPLAYED_HEADERS = ("content-type", "location", "link", "etag")


class Idempotency:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        namespace: str,
        ttl_seconds: int = 24 * 3600,
        lease_seconds: int = 60,
    ) -> None:
        self.redis = redis_client
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        # How long a first request may run before a duplicate may take over.
        self.lease_seconds = lease_seconds

    async def run(
        self,
        request: Request,
        scope: str,
        body: bytes,
        handle: Callable[[], Awaitable[Response]],
    ) -> Response:
        """Answers ``request`` (whose body is ``body``) once per key and scope."""
        key = request.headers.get(HEADER)
        if key is None:
            return await handle()
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            raise Problem(
                422,
                "invalid_idempotency_key",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
                errors=[{"field": "Idempotency-Key", "message": "invalid"}],
            )
        store_key = "idem:{}:{}".format(
            self.namespace, hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()
        )
        fingerprint = hashlib.sha256(
            request.method.encode() + b"\0" + request.url.path.encode() + b"\0" + body
        ).hexdigest()
        lease = encode({"state": "running", "fingerprint": fingerprint})
        if not await self.redis.set(store_key, lease, nx=True, ex=self.lease_seconds):
            return await self._replay(store_key, fingerprint)
        try:
            response = await handle()
        except Problem as problem:
            response = problem_response(problem, request.headers.get("x-request-id"))
        except BaseException:
            await self.redis.delete(store_key)
            raise
        if response.status_code >= 500 or response.status_code == 429:
            await self.redis.delete(store_key)
            return response
        record = {
            "state": "done",
            "fingerprint": fingerprint,
            "status": response.status_code,
            "headers": {
                name: response.headers[name]
                for name in _REPLAYED_HEADERS
                if name in response.headers
            },
            "body": base64.b64encode(response.body).decode(),
        }
        await self.redis.set(store_key, encode(record), ex=self.ttl_seconds)
        return response

    async def _replay(self, store_key: str, fingerprint: str) -> Response:
        raw = await self.redis.get(store_key)
        record = msgspec.json.decode(raw) if raw else None
        if record is None or record["state"] == "running":
            # Still running (or its lease lapsed this instant): the client retries.
            raise Problem(
                409,
                "idempotency_in_progress",
                "A request with this Idempotency-Key is still being processed.",
                headers={"Retry-After": "1"},
            )
        if record["fingerprint"] != fingerprint:
            raise Problem(
                422,
                "idempotency_key_reused",
                "This Idempotency-Key was used for a different request.",
            )
        return Response(
            base64.b64decode(record["body"]),
            status_code=record["status"],
            headers={**record["headers"], "Idempotent-Replayed": "true"},
        )

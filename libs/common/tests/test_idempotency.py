"""Idempotency-Key on a real Redis: replay, misuse, concurrency, failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
import redis.asyncio as aioredis
from social_common.idempotency import Idempotency
from social_common.redis import create_redis
from social_common.rest import Readiness, build_app, read_body
from social_stack.local import Endpoints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Shop:
    """A POST route that counts its effects, made idempotent."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.idempotency = Idempotency(client, f"test-{uuid.uuid4().hex}")
        self.effects = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next = False

    async def order(self, request: Request) -> Response:
        body = await read_body(request, 1024)

        async def handle() -> Response:
            self.entered.set()
            await self.release.wait()
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("the database went away")
            self.effects += 1
            return Response(b'{"order": %d}' % self.effects, 201, media_type="application/json")

        return await self.idempotency.run(request, request.headers["x-user"], body, handle)


def _run(stack: Endpoints, scenario: Callable[[Shop, httpx.AsyncClient], Awaitable[None]]) -> None:
    async def main() -> None:
        client = create_redis(stack.redis_url)
        shop = Shop(client)
        app = build_app(
            "shop", [Route("/orders", shop.order, methods=["POST"])], Readiness("s", {})
        )
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://shop") as http:
                await scenario(shop, http)
        finally:
            await client.aclose()

    asyncio.run(main())


def _headers(key: str | None, user: str = "alice") -> dict[str, str]:
    return {"x-user": user, **({"Idempotency-Key": key} if key else {})}


def test_a_retry_returns_the_first_response_without_a_second_effect(stack: Endpoints) -> None:
    async def scenario(shop: Shop, http: httpx.AsyncClient) -> None:
        first = await http.post("/orders", headers=_headers("k1"), content=b'{"item": 1}')
        again = await http.post("/orders", headers=_headers("k1"), content=b'{"item": 1}')
        assert (first.status_code, again.status_code) == (201, 201)
        assert first.json() == again.json() == {"order": 1}
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["content-type"] == "application/json"
        assert shop.effects == 1

    _run(stack, scenario)


def test_the_same_key_with_another_body_is_422(stack: Endpoints) -> None:
    async def scenario(shop: Shop, http: httpx.AsyncClient) -> None:
        await http.post("/orders", headers=_headers("k2"), content=b'{"item": 1}')
        other = await http.post("/orders", headers=_headers("k2"), content=b'{"item": 2}')
        assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
        assert shop.effects == 1

    _run(stack, scenario)


def test_a_concurrent_duplicate_is_409(stack: Endpoints) -> None:
    async def scenario(shop: Shop, http: httpx.AsyncClient) -> None:
        shop.release.clear()
        first = asyncio.create_task(
            http.post("/orders", headers=_headers("k3"), content=b'{"item": 1}')
        )
        await shop.entered.wait()  # the first holds the lease, blocked in its handler
        duplicate = await http.post("/orders", headers=_headers("k3"), content=b'{"item": 1}')
        shop.release.set()
        assert (duplicate.status_code, duplicate.json()["code"]) == (409, "idempotency_in_progress")
        assert duplicate.headers["retry-after"] == "1"
        assert (await first).status_code == 201
        assert shop.effects == 1

    _run(stack, scenario)


def test_a_server_error_is_not_kept_so_a_retry_runs_again(stack: Endpoints) -> None:
    async def scenario(shop: Shop, http: httpx.AsyncClient) -> None:
        shop.fail_next = True
        failed = await http.post("/orders", headers=_headers("k4"), content=b"{}")
        retried = await http.post("/orders", headers=_headers("k4"), content=b"{}")
        assert (failed.status_code, retried.status_code) == (500, 201)
        assert shop.effects == 1

    _run(stack, scenario)


def test_keys_are_scoped_per_caller_and_optional(stack: Endpoints) -> None:
    async def scenario(shop: Shop, http: httpx.AsyncClient) -> None:
        await http.post("/orders", headers=_headers("same", "alice"), content=b"{}")
        bob = await http.post("/orders", headers=_headers("same", "bob"), content=b"{}")
        assert bob.json() == {"order": 2}
        await http.post("/orders", headers=_headers(None), content=b"{}")
        await http.post("/orders", headers=_headers(None), content=b"{}")
        assert shop.effects == 4
        bad = await http.post("/orders", headers=_headers("x" * 256), content=b"{}")
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid_idempotency_key")

    _run(stack, scenario)

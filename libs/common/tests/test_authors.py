"""Author profiles for hydration, from the stack's real auth service over gRPC,
cached in L1 and the stack's Redis: one batch per miss, unknown ids remembered
as absent, usernames matched in any case, renames shown once the cache expires."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from social.auth.v1 import auth_pb2
from social_common.authors import Author, AuthorDirectory
from social_common.ids import uuid7
from social_common.redis import create_redis
from social_stack.local import Endpoints
from social_stack.testing import Account, client, create_account


class Calls(grpc.aio.UnaryUnaryClientInterceptor):
    """What the directory asked auth, as seen on the wire."""

    def __init__(self) -> None:
        self.requests: list[auth_pb2.GetUsersRequest] = []

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        if isinstance(request, auth_pb2.GetUsersRequest):
            self.requests.append(request)
        return await continuation(client_call_details, request)

    def ids(self) -> list[list[str]]:
        return [sorted(r.ids) for r in self.requests]

    def usernames(self) -> list[list[str]]:
        return [sorted(r.usernames) for r in self.requests]


Scenario = Callable[[aioredis.Redis, grpc.aio.Channel, Calls], Awaitable[None]]


def _run(target: str, redis_url: str, scenario: Scenario) -> None:
    async def main() -> None:
        calls = Calls()
        redis = create_redis(redis_url)
        auth = grpc.aio.insecure_channel(target, interceptors=[calls])
        try:
            await scenario(redis, auth, calls)
        finally:
            await auth.close()
            await redis.aclose()

    asyncio.run(main())


def _rename(stack: Endpoints, account: Account, display_name: str) -> None:
    with client(stack.gateway_url) as http:
        response = http.patch(
            "/api/v1/users/profile", headers=account.auth, json={"display_name": display_name}
        )
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == display_name


def _profile(account: Account, display_name: str) -> Author:
    return Author(id=account.id, username=account.username, display_name=display_name)


@pytest.fixture(scope="module")
def people(stack: Endpoints) -> list[Account]:
    accounts = [create_account(stack.gateway_url) for _ in range(2)]
    for n, account in enumerate(accounts):
        _rename(stack, account, f"Person {n} ✓")
    return accounts


def test_authors_come_in_one_batch_then_from_l1_then_from_redis(
    stack: Endpoints, people: list[Account]
) -> None:
    ann, bob = people
    unknown = str(uuid7())
    asked = [ann.id, bob.id, unknown, "not-a-uuid", ann.id]
    expected = {ann.id: _profile(ann, "Person 0 ✓"), bob.id: _profile(bob, "Person 1 ✓")}

    async def scenario(redis: aioredis.Redis, auth: grpc.aio.Channel, calls: Calls) -> None:
        first = AuthorDirectory(redis, auth, ttl_seconds=60)
        assert await first.authors(asked) == expected
        # One call for the lot, each id once.
        assert calls.ids() == [sorted({ann.id, bob.id, unknown, "not-a-uuid"})]
        assert await first.authors(asked) == expected
        assert await first.authors([bob.id]) == {bob.id: expected[bob.id]}
        # Another process (nothing in its L1) finds them, and the absent ones, in Redis.
        second = AuthorDirectory(redis, auth, ttl_seconds=60)
        assert await second.authors(asked) == expected
        assert len(calls.requests) == 1
        assert await first.authors([]) == {}
        assert len(calls.requests) == 1

    _run(stack.services_grpc["auth"], stack.redis_url, scenario)


def test_usernames_match_in_any_case_and_unknown_ones_are_asked_again(
    stack: Endpoints, people: list[Account]
) -> None:
    ann = people[0]
    nobody = f"nobody_{secrets.token_hex(6)}"

    async def scenario(redis: aioredis.Redis, auth: grpc.aio.Channel, calls: Calls) -> None:
        directory = AuthorDirectory(redis, auth, ttl_seconds=60)
        shouted = await directory.by_username(ann.username.upper())
        assert shouted == _profile(ann, "Person 0 ✓")
        assert await directory.by_username(ann.username) == shouted
        assert calls.usernames() == [[ann.username]]  # asked once, lowercased
        # A name nobody has yet may be registered a moment later: not remembered.
        assert await directory.by_username(nobody) is None
        assert await directory.by_username(nobody) is None
        assert calls.usernames()[1:] == [[nobody], [nobody]]

    _run(stack.services_grpc["auth"], stack.redis_url, scenario)


def test_a_new_display_name_shows_once_the_cached_one_expires(stack: Endpoints) -> None:
    # The TTL is the unit under test: one second, the shortest there is.
    account = create_account(stack.gateway_url)
    _rename(stack, account, "Before")

    async def scenario(redis: aioredis.Redis, auth: grpc.aio.Channel, _calls: Calls) -> None:
        directory = AuthorDirectory(redis, auth, ttl_seconds=1)
        assert (await directory.authors([account.id]))[account.id].display_name == "Before"
        cached_at = time.monotonic()
        # Kept in Redis no longer than the TTL.
        assert 0 < await redis.ttl(f"cache:authors:{account.id}") <= 1
        await asyncio.to_thread(_rename, stack, account, "After")
        # Within the TTL the cached name is served.
        seen = (await directory.authors([account.id]))[account.id].display_name
        if time.monotonic() - cached_at < 1:
            assert seen == "Before"
        while seen != "After":
            assert time.monotonic() - cached_at < 2.5, "the rename never showed"
            await asyncio.sleep(0.05)
            seen = (await directory.authors([account.id]))[account.id].display_name

    _run(stack.services_grpc["auth"], stack.redis_url, scenario)


def test_auth_out_of_reach_is_an_unavailable_error_and_nothing_is_cached(
    stack: Endpoints,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    asked = str(uuid7())

    async def scenario(redis: aioredis.Redis, auth: grpc.aio.Channel, _calls: Calls) -> None:
        directory = AuthorDirectory(redis, auth, ttl_seconds=60)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await directory.authors([asked])
        # The code the REST layer answers 503 for (a peer down), not a 500.
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert await redis.exists(f"cache:authors:{asked}") == 0

    _run(closed, stack.redis_url, scenario)

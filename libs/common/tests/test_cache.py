"""The two-layer cache and its broadcast, on the stack's Redis."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from social_common.cache import REQUESTS, Broadcast, Entry, LocalCache, TieredCache
from social_common.redis import create_redis, node_of, primaries_info
from social_stack.local import Endpoints, redis_cluster_asked, with_credentials
from social_stack.redis_cluster import move_slot


def _run(stack: Endpoints, scenario: Callable[[aioredis.Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        client = create_redis(stack.redis_url)
        try:
            await scenario(client)
        finally:
            await client.aclose()

    asyncio.run(main())


def _cache(client: aioredis.Redis, name: str, local_ttl_ms: int = 60_000) -> TieredCache:
    return TieredCache(
        client, name, local_ttl_ms=local_ttl_ms, local_max_entries=100, shared_ttl_seconds=60
    )


def _count(name: str, layer: str, outcome: str) -> float:
    value = REQUESTS.labels(name, layer, outcome)._value.get()
    return float(value)


class Source:
    """What a loader reads (the database, in a service), and how often it is asked."""

    def __init__(self, rows: Mapping[str, Entry]) -> None:
        self.rows = dict(rows)
        self.asked: list[list[str]] = []

    async def load(self, keys: Sequence[str]) -> Mapping[str, Entry]:
        self.asked.append(sorted(keys))
        return {k: self.rows[k] for k in keys if k in self.rows}


def test_reads_go_l1_then_redis_then_the_loader(stack: Endpoints) -> None:
    name = f"c{uuid.uuid4().hex[:8]}"

    async def scenario(client: aioredis.Redis) -> None:
        source = Source({"a": (1, {"v": "a"}), "b": (1, {"v": "b"})})
        first = _cache(client, name)
        assert await first.get_many(["a", "b", "c"], source.load) == {
            "a": {"v": "a"},
            "b": {"v": "b"},
        }
        assert await first.get_many(["a", "b"], source.load) == {"a": {"v": "a"}, "b": {"v": "b"}}
        # Another process: nothing in its L1, everything in Redis.
        second = _cache(client, name)
        assert await second.get_many(["a"], source.load) == {"a": {"v": "a"}}
        # Only the unknown key is asked for again: nothing remembers absence.
        assert await second.get_many(["c"], source.load) == {}
        assert source.asked == [["a", "b", "c"], ["c"]]
        assert _count(name, "l1", "hit") == 2
        assert _count(name, "l2", "hit") == 1
        assert _count(name, "l2", "miss") == 4

    _run(stack, scenario)


def test_without_redis_reads_come_from_the_source() -> None:
    async def scenario() -> None:
        with socket.socket() as closed_port:
            closed_port.bind(("127.0.0.1", 0))  # bound, never listening: refused
            port = closed_port.getsockname()[1]
            unreachable = aioredis.Redis(port=port, retry=Retry(NoBackoff(), 0))
            source = Source({"a": (1, {"v": "a"})})
            cache = _cache(unreachable, f"c{uuid.uuid4().hex[:8]}")
            assert await cache.get_many(["a", "b"], source.load) == {"a": {"v": "a"}}
            # Held in L1 meanwhile.
            assert await cache.get_many(["a"], source.load) == {"a": {"v": "a"}}
            assert source.asked == [["a", "b"]]
            await unreachable.aclose()

    asyncio.run(scenario())


def test_a_read_whose_write_back_fails_still_answers(stack: Endpoints) -> None:
    """Redis answers the lookup, then refuses the write-back (here: a user
    allowed to read only), as when it goes away in between."""
    user, password = f"reader{uuid.uuid4().hex[:8]}", uuid.uuid4().hex

    async def scenario(client: aioredis.Redis) -> None:
        # On a cluster, the client reads the cluster's map first.
        commands = ["+mget", "+cluster|slots", "+cluster|shards", "+ping"]
        await client.acl_setuser(
            user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=commands
        )
        reader = create_redis(with_credentials(stack.redis_url, user, password))
        try:
            source = Source({"a": (1, {"v": "a"})})
            cache = _cache(reader, f"c{uuid.uuid4().hex[:8]}")
            assert await cache.get_many(["a"], source.load) == {"a": {"v": "a"}}
            assert await cache.get_many(["a"], source.load) == {"a": {"v": "a"}}
            assert source.asked == [["a"]]
        finally:
            await reader.aclose()
            await client.acl_deluser(user)

    _run(stack, scenario)


def test_an_older_version_never_replaces_a_newer_one(stack: Endpoints) -> None:
    name = f"c{uuid.uuid4().hex[:8]}"

    async def scenario(client: aioredis.Redis) -> None:
        writer, late_reader = _cache(client, name), _cache(client, name)
        await writer.put_many({"p": (2, {"likes": 1})})
        # A reader that loaded version 1 before the write stores it after.
        await late_reader.put_many({"p": (1, {"likes": 0})})
        fresh = _cache(client, name)
        assert await fresh.get_many(["p"], Source({}).load) == {"p": {"likes": 1}}
        assert await writer.get_many(["p"], Source({}).load) == {"p": {"likes": 1}}
        # A tombstone at a newer version hides the entry from every layer.
        await writer.put_many({"p": (3, None)})
        assert await _cache(client, name).get_many(["p"], Source({"p": (1, {})}).load) == {}
        assert await writer.get_many(["p"], Source({}).load) == {}

    _run(stack, scenario)


def test_local_entries_expire_and_are_bounded() -> None:
    local = LocalCache(ttl_ms=60_000, max_entries=2)
    for key in "abc":
        local.put(key, 1, key)
    assert [local.get(k) for k in "abc"] == [None, (1, "b"), (1, "c")]
    local.put("b", 0, "older")
    assert local.get("b") == (1, "b")
    local.drop("b", older_than=1)
    assert local.get("b") == (1, "b")
    # A newer version exists: a reader still holding version 1 cannot put it back.
    local.drop("b", older_than=2)
    assert local.get("b") is None
    local.put("b", 1, "stale")
    assert local.get("b") is None
    local.put("b", 2, "fresh")
    assert local.get("b") == (2, "fresh")
    local.drop("b")
    assert local.get("b") is None
    expired = LocalCache(ttl_ms=0, max_entries=10)
    expired.put("a", 1, "a")
    assert expired.get("a") is None


def test_a_broadcast_reaches_listeners_after_a_reset(stack: Endpoints) -> None:
    channel = f"test:{uuid.uuid4().hex[:8]}"

    async def scenario(client: aioredis.Redis) -> None:
        received: list[Any] = []
        resets = asyncio.Event()
        arrived = asyncio.Event()

        def on_message(message: Any) -> None:
            received.append(message)
            arrived.set()

        listener = Broadcast(client, channel)
        task = asyncio.create_task(listener.listen(on_message, resets.set))
        try:
            async with asyncio.timeout(10):
                await resets.wait()  # subscribed: what is published now arrives
                await Broadcast(client, channel).publish({"posts": {"p": 3}})
                await arrived.wait()
        finally:
            task.cancel()
        assert received == [{"posts": {"p": 3}}]

    _run(stack, scenario)


@pytest.mark.skipif(
    not redis_cluster_asked(os.environ), reason="a Redis Cluster's slot moving (make test-cluster)"
)
def test_a_broadcast_follows_its_channel_to_the_primary_its_slot_moves_to(
    stack: Endpoints,
) -> None:
    channel = f"test:{uuid.uuid4().hex[:8]}"
    slot = key_slot(channel.encode())

    async def scenario(client: aioredis.Redis) -> None:
        received: list[Any] = []
        resets: asyncio.Queue[None] = asyncio.Queue()
        arrived = asyncio.Event()

        def on_message(message: Any) -> None:
            received.append(message)
            arrived.set()

        source = await node_of(client, channel)
        primaries = await asyncio.to_thread(primaries_info, stack.redis_url, "server")
        target = next(other for other in primaries if other != source)
        task = asyncio.create_task(
            Broadcast(client, channel).listen(on_message, lambda: resets.put_nowait(None))
        )
        try:
            async with asyncio.timeout(20):
                await resets.get()  # subscribed on the source
                await asyncio.to_thread(move_slot, slot, source, target)
                await resets.get()  # unsubscribed by the source, subscribed on the target
                assert await node_of(client, channel) == target
                await Broadcast(client, channel).publish({"posts": {"p": 4}})
                await arrived.wait()
        finally:
            task.cancel()
            await asyncio.to_thread(move_slot, slot, target, source)
        assert received == [{"posts": {"p": 4}}]

    _run(stack, scenario)


class _Profile(msgspec.Struct):
    name: str
    age: int


def test_a_typed_cache_decodes_its_values_and_reloads_a_value_of_another_shape(
    stack: Endpoints,
) -> None:
    name = f"c{uuid.uuid4().hex[:8]}"

    async def scenario(client: aioredis.Redis) -> None:
        def typed() -> TieredCache:
            return TieredCache(
                client,
                name,
                local_ttl_ms=60_000,
                local_max_entries=100,
                shared_ttl_seconds=60,
                kind=_Profile,
            )

        source = Source({"ann": (3, _Profile("Ann", 30)), "bob": (3, _Profile("Bob", 40))})
        await typed().get_many(["ann"], source.load)
        # Another process finds ann's JSON in Redis and gets the Struct back.
        assert await typed().get_many(["ann"], source.load) == {"ann": _Profile("Ann", 30)}
        assert source.asked == [["ann"]]
        # What an older release stored under bob, in another shape, is a miss:
        # reloaded from the source, whose entry then replaces it.
        await client.set(f"cache:{name}:bob", b'3|{"name": "Bob", "years": 40}')
        assert await typed().get_many(["bob"], source.load) == {"bob": _Profile("Bob", 40)}
        assert source.asked == [["ann"], ["bob"]]
        assert await client.get(f"cache:{name}:bob") == b'3|{"name":"Bob","age":40}'

    _run(stack, scenario)

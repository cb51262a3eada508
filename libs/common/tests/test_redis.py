"""The shared Redis client survives a Redis restart: its pooled connections,
broken by the restart, cost no command an error; the URL says whether Redis
is a cluster; a cluster's client routes its first commands by their keys;
tools read each primary's INFO."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from typing import Any

import pytest
from redis.crc import key_slot
from social_common.redis import (
    NotReplicated,
    create_redis,
    create_sync_redis,
    execute_replicated,
    in_cluster,
    mget,
    node_of,
    primaries_info,
)
from social_stack import redis_cluster
from social_stack.local import Endpoints, redis_cluster_asked
from social_stack.processes import Component, start, stop, wait_healthy
from social_stack.redis_cluster import move_slot


def test_commands_on_connections_a_restart_broke_succeed(
    redis_server: tuple[Component, dict[str, subprocess.Popen[bytes]]],
) -> None:
    component, running = redis_server
    url = f"redis://{component.probe.address}/0"

    async def main() -> None:
        client = create_redis(url)
        try:
            # Several connections in the pool, all used before the restart.
            await asyncio.gather(*(client.set(f"k{i}", i) for i in range(8)))
            stop([component])
            running["redis"] = start(component, tie_to_parent=True)
            await asyncio.to_thread(wait_healthy, [component], running, 30)
            results = await asyncio.gather(*(client.incr(f"n{i}") for i in range(8)))
            assert results == [1] * 8
        finally:
            await client.aclose()

    asyncio.run(main())


def test_the_url_says_whether_redis_is_a_cluster() -> None:
    # Nothing is reached: clients connect on first use.
    assert not in_cluster(create_redis("redis://127.0.0.1:6379/0"))
    assert not in_cluster(create_redis("redis://127.0.0.1:6379/0?cluster=false"))
    assert in_cluster(create_redis("redis://127.0.0.1:6379/0?cluster=true"))
    with pytest.raises(ValueError, match="cluster parameter"):
        create_redis("redis://127.0.0.1:6379/0?cluster=yes")


def test_each_primary_gives_its_info_by_its_address(stack: Endpoints) -> None:
    found = primaries_info(stack.redis_url, "replication")
    expected = redis_cluster.PRIMARIES if redis_cluster_asked(os.environ) else 1
    assert len(found) == expected
    for address, info in found.items():
        assert info["role"] == "master"
        with create_sync_redis(f"redis://{address}/0") as node:
            assert node.info("replication")["master_replid"] == info["master_replid"]


def test_a_write_on_a_connection_closed_under_it_fails_as_a_broken_one() -> None:
    # As when the cluster client closes a replaced node's connections while
    # one is still connecting: a broken connection (retried), not an
    # AttributeError (a 500, or a background task ended).
    pool: Any = create_redis("redis://127.0.0.1:1/0").connection_pool
    connection = pool.make_connection()  # as the client's pool makes each
    with pytest.raises(ConnectionResetError, match="closed while in use"):
        asyncio.run(connection._send_packed_command([b"PING"]))


def _summed(url: str, section: str, stat: str, field: str) -> int:
    """``field`` of the INFO ``section``'s ``stat``, summed over the primaries."""
    return sum(
        int(info.get(stat, {}).get(field, 0)) for info in primaries_info(url, section).values()
    )


def _getkeys_calls(url: str) -> int:
    return _summed(url, "commandstats", "cmdstat_command|getkeys", "calls")


def test_stream_reads_go_to_their_streams_node_without_asking_for_their_keys(
    stack: Endpoints,
) -> None:
    # Streams on every primary of a cluster (a tag per slot range), read by a
    # group and a consumer named like the keyword that ends the options.
    streams = [f"reads:{{{tag}}}" for tag in ("a", "b", "c", "d")]

    async def main() -> list[Any]:
        client = create_redis(stack.redis_url)
        try:
            read = []
            for stream in streams:
                await client.xgroup_create(stream, "streams", id="0", mkstream=True)
                entry = await client.xadd(stream, {"n": stream})
                grouped = await client.xreadgroup("streams", "STREAMS", {stream: ">"}, count=5)
                plain = await client.xread({stream: "0"}, count=5, block=10)
                read.append((entry, grouped, plain))
            return read
        finally:
            await client.aclose()

    before = _getkeys_calls(stack.redis_url)
    for stream, (entry, grouped, plain) in zip(streams, asyncio.run(main()), strict=True):
        expected = [[stream.encode(), [(entry, {b"n": stream.encode()})]]]
        assert grouped == expected
        assert plain == expected
    # redis-py would ask a node for a stream read's keys, twice per read.
    assert _getkeys_calls(stack.redis_url) == before


def _moved_replies(url: str) -> int:
    return _summed(url, "errorstats", "errorstat_MOVED", "count")


def test_a_new_clients_concurrent_commands_go_straight_to_their_keys_nodes(
    stack: Endpoints,
) -> None:
    # Keys in every slot range, written at once by a client that has not
    # yet learnt the cluster's map (not `async with`: that learns it).
    keys = [f"routed:{uuid.uuid4()}" for _ in range(50)]

    async def main() -> list[Any]:
        client = create_redis(stack.redis_url)
        try:
            return await asyncio.gather(*(client.set(key, 1) for key in keys))
        finally:
            await client.aclose()

    before = _moved_replies(stack.redis_url)
    assert asyncio.run(main()) == [True] * len(keys)
    # redis-py sends such commands to any node; most came back MOVED, and
    # every fifth MOVED closed the connections of all commands in flight.
    assert _moved_replies(stack.redis_url) == before


def _blocked_in(node: str, command: str) -> set[int]:
    """The ids of the clients of ``node`` blocked in ``command``, once there is one."""
    deadline = time.monotonic() + 20
    with create_sync_redis(f"redis://{node}/0") as client:
        while time.monotonic() < deadline:
            listed = client.client_list()
            if found := {int(c["id"]) for c in listed if c["cmd"] == command and "b" in c["flags"]}:
                return found
            time.sleep(0.01)
    raise TimeoutError(f"no client of {node} blocked in {command}")


@pytest.mark.skipif(
    not redis_cluster_asked(os.environ), reason="a Redis Cluster's slots moving (make test-cluster)"
)
def test_moved_replies_leave_the_commands_in_flight_on_other_primaries_alone(
    stack: Endpoints,
) -> None:
    waiting = f"in-flight:{uuid.uuid4()}"  # a list a BLPOP waits on

    async def main() -> None:
        async with create_redis(stack.redis_url) as client:
            primaries = await asyncio.to_thread(primaries_info, stack.redis_url, "server")
            held = await node_of(client, waiting)
            source, target = (address for address in sorted(primaries) if address != held)
            # Keys in five slots of another primary: each will answer MOVED once.
            keys: dict[int, str] = {}
            while len(keys) < 5:
                key = f"moving:{uuid.uuid4()}"
                if await node_of(client, key) == source:
                    keys[key_slot(key.encode())] = key
            await asyncio.gather(*(client.set(key, 1) for key in keys.values()))
            # Within the client's socket timeout.
            blpop = asyncio.ensure_future(client.blpop([waiting], timeout=4))
            blocked = await asyncio.to_thread(_blocked_in, held, "blpop")
            moved_before = _moved_replies(stack.redis_url)
            moved: list[int] = []
            try:
                for slot in keys:
                    await asyncio.to_thread(move_slot, slot, source, target)
                    moved.append(slot)
                assert [await client.get(key) for key in keys.values()] == [b"1"] * len(keys)
                assert _moved_replies(stack.redis_url) - moved_before == len(keys)
                # redis-py's default closed every connection at the fifth MOVED,
                # the BLPOP's too, and sent the BLPOP again on a new one.
                assert blocked <= await asyncio.to_thread(_blocked_in, held, "blpop")
                await client.rpush(waiting, "here")
                assert await blpop == (waiting.encode(), b"here")
            finally:
                blpop.cancel()
                for slot in moved:
                    await asyncio.to_thread(move_slot, slot, target, source)

    asyncio.run(main())


@pytest.mark.skipif(
    not redis_cluster_asked(os.environ), reason="a Redis Cluster's slot moving (make test-cluster)"
)
def test_reads_of_keys_in_a_slot_that_moved_learn_where_it_went_once(stack: Endpoints) -> None:
    keys = [f"read:{{{tag}}}:{uuid.uuid4()}" for tag in ("a", "b")]  # two slots

    async def main() -> None:
        async with create_redis(stack.redis_url) as client:
            await asyncio.gather(*(client.set(key, key) for key in keys))
            assert await mget(client, keys) == [key.encode() for key in keys]  # the map learnt
            source = await node_of(client, keys[0])
            primaries = await asyncio.to_thread(primaries_info, stack.redis_url, "server")
            target = next(other for other in primaries if other != source)
            slot = key_slot(keys[0].encode())
            await asyncio.to_thread(move_slot, slot, source, target)
            try:
                moved = _moved_replies(stack.redis_url)
                assert await mget(client, keys) == [key.encode() for key in keys]
                # The moved key's node said MOVED, once: the client learnt the
                # map before sending the reads again.
                assert _moved_replies(stack.redis_url) - moved == 1
            finally:
                await asyncio.to_thread(move_slot, slot, target, source)

    asyncio.run(main())


def test_replicated_writes_answer_in_order_once_enough_replicas_have_them(
    stack: Endpoints,
) -> None:
    # Keys on every primary of a cluster; a replica each there, none on one server.
    keys = [f"replicated:{{{tag}}}:{uuid.uuid4()}" for tag in ("a", "b", "c", "d")]
    have = 1 if redis_cluster_asked(os.environ) else 0

    async def main() -> None:
        client = create_redis(stack.redis_url)
        try:
            writes = [(key, ("INCRBY", key, n)) for n, key in enumerate(keys, start=1)]
            assert await execute_replicated(client, writes, have, 1000) == [1, 2, 3, 4]
            with pytest.raises(NotReplicated, match=f"{have} of {have + 1} replicas"):
                await execute_replicated(client, writes, have + 1, 10)
            # Refused, the writes were made all the same (for the caller to send again).
            assert await client.get(keys[0]) == b"2"
        finally:
            await client.aclose()

    asyncio.run(main())

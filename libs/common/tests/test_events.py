"""The outbox, its relay and consumers, on the stack's PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool
from social.auth.v1.auth_pb2 import User
from social.events.v1.events_pb2 import Envelope
from social.posts.v1.events_pb2 import PostDeleted
from social_common.db import create_pool
from social_common.events import (
    PAYLOAD_VERSION,
    EventConsumer,
    OutboxRelay,
    dead_letters_of,
    emit,
    event_ids,
    make_envelope,
    stream_for,
    streams_of,
)
from social_common.ids import uuid7
from social_common.migrations import apply_migrations, ensure_service_schema, load_migrations
from social_common.redis import create_redis
from social_stack.local import Endpoints, with_credentials


@pytest.fixture
def producer(stack: Endpoints) -> tuple[str, str]:
    """A throwaway service schema with the platform's outbox table."""
    name = f"p_{uuid.uuid4().hex[:10]}"
    ensure_service_schema(stack.database_admin_url, name, "secret-pw")
    url = with_credentials(stack.database_admin_url, name, "secret-pw")
    outbox = load_migrations(resources.files("social_common") / "outbox_migrations")
    apply_migrations(url, name, outbox, "outbox_migrations")
    return name, url


Scenario = Callable[[AsyncConnectionPool, aioredis.Redis], Awaitable[None]]


def _run(stack: Endpoints, url: str, scenario: Scenario) -> None:
    async def main() -> None:
        pool = create_pool(url, min_size=1, max_size=4, name="events-test")
        await pool.open()
        client = create_redis(stack.redis_url)
        try:
            await scenario(pool, client)
        finally:
            await pool.close()
            await client.aclose()

    asyncio.run(main())


async def _emit(pool: AsyncConnectionPool, producer: str, event_type: str, key: str) -> None:
    async with pool.connection() as conn, conn.transaction():
        await emit(
            conn,
            producer=producer,
            event_type=event_type,
            key=key,
            payload=User(id=key, username="ada"),
        )


async def _collecting(
    client: aioredis.Redis, event_type: str, block_ms: int = 500
) -> tuple[EventConsumer, list[Envelope]]:
    """A consumer (its group created) that keeps what it receives."""
    seen: list[Envelope] = []

    async def handle(envelope: Envelope) -> None:
        seen.append(envelope)

    consumer = EventConsumer(client, "g1", "c1", {event_type: handle}, block_ms=block_ms)
    await consumer.ensure_groups()
    return consumer, seen


async def _until_received(consumer: EventConsumer, seen: list[Envelope]) -> None:
    async with asyncio.timeout(10):
        while not seen:
            await consumer.poll_once()


def test_a_committed_event_reaches_a_consumer_group(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        consumer, seen = await _collecting(client, event_type, block_ms=100)
        await _emit(pool, name, event_type, "key-1")
        assert await OutboxRelay(name, url, pool, client).publish_pending() == 1
        assert await consumer.poll_once() == 1
        [envelope] = seen
        assert (envelope.type, envelope.producer, envelope.key) == (event_type, name, "key-1")
        assert envelope.version == 1
        assert User.FromString(envelope.payload).username == "ada"
        assert uuid.UUID(envelope.id).version == 7
        # Acknowledged: nothing stays pending for the group.
        assert (await client.xpending(stream_for(event_type, "key-1"), "g1"))["pending"] == 0
        async with pool.connection() as conn:
            assert await (await conn.execute("SELECT count(*) FROM outbox")).fetchone() == (0,)

    _run(stack, url, scenario)


def test_what_one_read_handled_is_acknowledged_together_after_it(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        pending_while_handling: list[int] = []

        async def handle(_envelope: Envelope) -> None:
            pending = await client.xpending(stream_for(event_type, "k"), "g1")
            pending_while_handling.append(pending["pending"])

        consumer = EventConsumer(client, "g1", "c1", {event_type: handle}, block_ms=100)
        await consumer.ensure_groups()
        for _ in range(3):
            await _emit(pool, name, event_type, "k")
        assert await OutboxRelay(name, url, pool, client).publish_pending() == 3
        assert await consumer.poll_once() == 3
        # One XACK for the read, once all of it was handled, not one per entry.
        assert pending_while_handling == [3, 3, 3]
        assert (await client.xpending(stream_for(event_type, "k"), "g1"))["pending"] == 0

    _run(stack, url, scenario)


def test_a_consumer_makes_its_group_again_when_redis_lost_it(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        consumer, seen = await _collecting(client, event_type, block_ms=100)
        # As after a restart of a Redis that kept nothing: no stream, no group.
        for stream in streams_of(event_type):
            await client.delete(stream)
        await _emit(pool, name, event_type, "after-the-loss")
        assert await OutboxRelay(name, url, pool, client).publish_pending() == 1
        await _until_received(consumer, seen)
        assert [e.key for e in seen] == ["after-the-loss"]

    _run(stack, url, scenario)


def test_a_rolled_back_transaction_publishes_nothing(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def change_that_fails(pool: AsyncConnectionPool) -> None:
        async with pool.connection() as conn, conn.transaction():
            await emit(conn, producer=name, event_type=event_type, key="k", payload=User())
            raise RuntimeError("the change failed")

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        with pytest.raises(RuntimeError):
            await change_that_fails(pool)
        assert await OutboxRelay(name, url, pool, client).publish_pending() == 0
        assert await client.xlen(stream_for(event_type, "k")) == 0

    _run(stack, url, scenario)


def test_an_event_committed_while_the_relay_is_down_arrives_when_it_restarts(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        # The relay is "killed": the transaction commits and nobody publishes.
        await _emit(pool, name, event_type, "while-down")
        assert await client.xlen(stream_for(event_type, "while-down")) == 0
        relay = asyncio.create_task(OutboxRelay(name, url, pool, client).run())
        try:
            consumer, seen = await _collecting(client, event_type)
            await _until_received(consumer, seen)
        finally:
            relay.cancel()
        assert [e.key for e in seen] == ["while-down"]

    _run(stack, url, scenario)


async def _listening(pool: AsyncConnectionPool, producer: str) -> None:
    """Returns once the relay's LISTEN shows in pg_stat_activity."""
    async with asyncio.timeout(10):
        # The state lives in PostgreSQL: there is no event in this process to
        # await. Each look is its own transaction, since within one
        # pg_stat_activity keeps answering from its first snapshot.
        while True:
            async with pool.connection() as conn:
                cursor = await conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE query = %s",
                    (f'LISTEN "outbox_{producer}"',),
                )
                if await cursor.fetchone():
                    return
            await asyncio.sleep(0.02)


def test_a_running_relay_is_woken_by_the_commit_not_by_polling(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        consumer, seen = await _collecting(client, event_type)
        # It would only poll once a minute: the event must arrive through NOTIFY.
        relay = asyncio.create_task(OutboxRelay(name, url, pool, client, idle_poll=60).run())
        try:
            await _listening(pool, name)
            await _emit(pool, name, event_type, "notified")
            await _until_received(consumer, seen)
        finally:
            relay.cancel()
        assert seen[0].key == "notified"

    _run(stack, url, scenario)


def test_each_stream_keeps_its_events_in_commit_order_with_two_relays(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        for n in range(50):
            await _emit(pool, name, event_type, str(n))
        relays = [OutboxRelay(name, url, pool, client, batch=7) for _ in range(2)]
        while sum(await asyncio.gather(*(r.publish_pending() for r in relays))):
            pass
        published = []
        for stream in streams_of(event_type):
            entries: Any = await client.xrange(stream)
            keys = [int(Envelope.FromString(fields[b"envelope"]).key) for _, fields in entries]
            assert keys == sorted(keys)
            published += keys
        assert sorted(published) == list(range(50))

    _run(stack, url, scenario)


def test_a_failing_handler_is_retried_and_then_dead_lettered(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    flaky, broken = f"test.{uuid.uuid4().hex[:8]}", f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        attempts = {"flaky": 0, "broken": 0}

        async def fails_once(envelope: Envelope) -> None:
            attempts["flaky"] += 1
            if attempts["flaky"] == 1:
                raise ConnectionError("the database blinked")

        async def always_fails(envelope: Envelope) -> None:
            attempts["broken"] += 1
            raise ValueError("a payload this consumer cannot take")

        consumer = EventConsumer(
            client,
            "g1",
            "c1",
            {flaky: fails_once, broken: always_fails},
            block_ms=100,
            claim_idle_ms=1,
            max_deliveries=3,
        )
        await consumer.ensure_groups()
        await _emit(pool, name, flaky, "a")
        await _emit(pool, name, broken, "b")
        await OutboxRelay(name, url, pool, client).publish_pending()
        await consumer.poll_once()
        for _ in range(4):
            await asyncio.sleep(0.01)  # past claim_idle_ms
            await consumer.reclaim_once()
        assert attempts == {"flaky": 2, "broken": 3}
        for event_type, key in ((flaky, "a"), (broken, "b")):
            assert (await client.xpending(stream_for(event_type, key), "g1"))["pending"] == 0
        assert await client.xlen(dead_letters_of(flaky)) == 0
        assert await client.xlen(dead_letters_of(broken)) == 1
        dead = {"type": broken, "group": "g1"}
        assert REGISTRY.get_sample_value("events_dead_lettered_total", dead) == 1

    _run(stack, url, scenario)


def test_a_payload_version_the_consumer_does_not_know_is_not_handled(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    _, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(_pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        consumer, seen = await _collecting(client, event_type, block_ms=100)
        newer = make_envelope("p", event_type, "k", User(id="k"), version=PAYLOAD_VERSION + 1)
        await client.xadd(stream_for(event_type, "k"), {"envelope": newer.SerializeToString()})
        assert await consumer.poll_once() == 1
        assert seen == []
        # Left pending: retried (and in the end dead-lettered), never misread.
        assert (await client.xpending(stream_for(event_type, "k"), "g1"))["pending"] == 1

    _run(stack, url, scenario)


def test_event_ids_are_uuids_or_the_event_is_ignored() -> None:
    post_id, author_id = uuid7(), uuid7()
    good = PostDeleted(post_id=str(post_id), author_id=str(author_id))
    envelope = make_envelope("posts", "post.deleted", str(post_id), good)
    assert event_ids(envelope, PostDeleted, "post_id", "author_id") == [post_id, author_id]
    envelope.payload = PostDeleted(post_id="nope", author_id=str(author_id)).SerializeToString()
    assert event_ids(envelope, PostDeleted, "post_id", "author_id") is None
    envelope.payload = b"\xff\xff"
    assert event_ids(envelope, PostDeleted, "post_id") is None


def _gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_backlogs_are_measured_outbox_and_consumer_group(
    stack: Endpoints, producer: tuple[str, str]
) -> None:
    name, url = producer
    event_type = f"test.{uuid.uuid4().hex[:8]}"

    async def scenario(pool: AsyncConnectionPool, client: aioredis.Redis) -> None:
        relay = OutboxRelay(name, url, pool, client)
        consumer, seen = await _collecting(client, event_type, block_ms=100)
        for key in ("a", "b", "c"):
            await _emit(pool, name, event_type, key)
        await relay.measure_backlog()
        assert _gauge("outbox_pending_events", producer=name) == 3
        oldest = _gauge("outbox_oldest_pending_seconds", producer=name)
        assert oldest is not None
        assert 0 <= oldest < 60
        await relay.publish_pending()
        await relay.measure_backlog()
        assert _gauge("outbox_pending_events", producer=name) == 0
        assert _gauge("outbox_oldest_pending_seconds", producer=name) == 0
        # Three entries in the stream, none delivered to the group yet.
        await consumer.measure_backlog()
        assert _gauge("events_consumer_pending", type=event_type, group="g1") == 0
        lag = _gauge("events_consumer_lag_seconds", type=event_type, group="g1")
        assert lag is not None
        assert lag > 0  # its last delivered id is 0-0: as old as it gets
        await _until_received(consumer, seen)
        await consumer.measure_backlog()
        assert _gauge("events_consumer_lag_seconds", type=event_type, group="g1") == 0

    _run(stack, url, scenario)

"""Events between services: the transactional outbox, its relay to Redis
Streams, and consumers (at least once; consumers deduplicate by envelope id).

A producer calls :func:`emit` inside the transaction that makes the change,
so the event exists exactly when the change does. :class:`OutboxRelay` moves
committed events to their streams (:func:`stream_for`) and deletes them only
once Redis has them: a relay killed between commit and publish publishes on its
next start, a rolled-back transaction never published anything.
:class:`EventConsumer` reads streams in a consumer group and acknowledges an
event only after its handler succeeded; what a crashed or failing consumer
left pending is claimed again, and an event that failed ``max_deliveries``
times goes to ``dead:events:<type>`` (:func:`dead_letters_of`) for an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import psycopg
import redis.asyncio as aioredis
import redis.exceptions
from google.protobuf.message import DecodeError, Message
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Gauge
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from social.events.v1.events_pb2 import Envelope

from social_common.ids import parse_uuid, uuid7
from social_common.logging import get_logger
from social_common.redis import (
    UNAVAILABLE,
    as_text,
    execute_replicated,
    pipelined,
    slot_groups,
)
from social_common.tasks import cancel_requested
from social_common.tracing import continued_span, inject_context

log = get_logger(__name__)

STREAM_PREFIX = "events:"
# Each event type is spread over this many streams by its events' keys, so no
# type is one hot key on one shard of a Redis Cluster, and a key's events stay
# in order on one stream. Shard s of every type has the hash tag {s}: one
# XREADGROUP reads all the types a consumer handles in a shard. The count is
# in the streams' names: changing it strands what the old streams hold
# (consumers would have to read both until those drain).
STREAM_SHARDS = 16
# Types every process follows whole, in order, not as a group
# (social_common.revocation): one stream, never sharded.
UNSHARDED_TYPES = frozenset({"sessions.revoked"})
# Streams are trimmed (approximately) to this many entries: consumers are
# expected to keep up; a replay further back reads Postgres, not Redis.
STREAM_MAXLEN = 1_000_000

RELAYED = Counter("events_relayed_total", "Events moved from the outbox to Redis", ["type"])
HANDLED = Counter("events_handled_total", "Events consumed", ["type", "outcome"])
DEAD_LETTERED = Counter(
    "events_dead_lettered_total", "Events set aside unhandled", ["type", "group"]
)
# The backlogs, sampled by the relays and the consumers as they run.
OUTBOX_PENDING = Gauge("outbox_pending_events", "Outbox rows not yet relayed", ["producer"])
OUTBOX_OLDEST = Gauge(
    "outbox_oldest_pending_seconds", "Age of the oldest outbox row not yet relayed", ["producer"]
)
CONSUMER_PENDING = Gauge(
    "events_consumer_pending",
    "Entries of a type delivered to a group, not yet acknowledged",
    ["type", "group"],
)
CONSUMER_LAG = Gauge(
    "events_consumer_lag_seconds",
    "How far behind a stream's newest entry a group's last delivered one is,"
    " on the type's stream furthest behind",
    ["type", "group"],
)
# How often the backlogs are measured (a count of the outbox, two XINFO a stream).
BACKLOG_SAMPLE_SECONDS = 5.0
# The fewest entries one read takes from each of its streams.
_MIN_READ_PER_STREAM = 10

Handler = Callable[[Envelope], Awaitable[None]]

# The payload version producers write and consumers understand. A consumer
# leaves any other version pending (retried, then dead-lettered) rather than
# misread it: deploy consumers that know a version before producers write it.
PAYLOAD_VERSION = 1


def consumer_name() -> str:
    """This process's name within a consumer group: unique per pod and process,
    so what a dead one left pending is visibly its own and reclaimed by others."""
    return f"{socket.gethostname()}-{os.getpid()}"


def streams_of(event_type: str) -> list[str]:
    """Every stream of ``event_type``: a consumer of the type reads them all."""
    if event_type in UNSHARDED_TYPES:
        return [STREAM_PREFIX + event_type]
    return [f"{STREAM_PREFIX}{{{shard}}}:{event_type}" for shard in range(STREAM_SHARDS)]


def dead_letters_of(event_type: str) -> str:
    """The stream where consumers set aside the events of ``event_type`` they
    could not handle (every shard's, with the group that gave up)."""
    return f"dead:{STREAM_PREFIX}{event_type}"


def stream_for(event_type: str, key: str) -> str:
    """The stream of an event of ``event_type`` whose key is ``key``."""
    streams = streams_of(event_type)
    return streams[zlib.crc32(key.encode()) % len(streams)]


def _channel_name(producer: str) -> str:
    # One notification channel per producer: a service's relay wakes for its own events.
    return f"outbox_{producer}"


def make_envelope(
    producer: str, event_type: str, key: str, payload: Message, version: int = PAYLOAD_VERSION
) -> Envelope:
    envelope = Envelope(
        id=str(uuid7()),
        type=event_type,
        version=version,
        producer=producer,
        key=key,
        payload=payload.SerializeToString(),
    )
    envelope.time.GetCurrentTime()
    inject_context(envelope.trace_context)
    return envelope


async def emit(
    conn: psycopg.AsyncConnection[object],
    *,
    producer: str,
    event_type: str,
    key: str,
    payload: Message,
    version: int = PAYLOAD_VERSION,
) -> Envelope:
    """Writes an event to the outbox in the caller's transaction."""
    envelope = make_envelope(producer, event_type, key, payload, version)
    # One statement; the notification is delivered when (and only if) the
    # transaction commits.
    await conn.execute(
        "WITH queued AS (INSERT INTO outbox (event_type, envelope) VALUES (%s, %s))"
        " SELECT pg_notify(%s, '')",
        (event_type, envelope.SerializeToString(), _channel_name(producer)),
    )
    return envelope


# The oldest events, unless another relay of the producer holds its lock.
_TAKE_BATCH = """
WITH relay AS (SELECT pg_try_advisory_xact_lock(hashtext(%s)) AS alone)
DELETE FROM outbox
WHERE (SELECT alone FROM relay) AND id IN (SELECT id FROM outbox ORDER BY id LIMIT %s)
RETURNING id, event_type, envelope
"""
# How long a batch waits for its replicas before it is put back and tried again.
WAIT_REPLICAS_MS = 1000
# Rows waiting, and the oldest one's age in seconds (NULL when none waits).
_BACKLOG = "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM outbox"


def event_ids(envelope: Envelope, payload: type[Message], *fields: str) -> list[uuid.UUID] | None:
    """The ids named by ``fields`` in the envelope's payload (of type
    ``payload``), as UUIDs, for a handler. None, logged as ``event_ignored``,
    when the payload does not decode or one is not a UUID: no retry can mend
    either, so the handler acknowledges the event and does nothing."""
    try:
        event = payload.FromString(envelope.payload)
    except DecodeError:
        log.warning("event_ignored", id=envelope.id, type=envelope.type, reason="undecodable")
        return None
    texts = {field: getattr(event, field) for field in fields}
    ids = [parse_uuid(text) for text in texts.values()]
    if None in ids:
        log.warning(
            "event_ignored", id=envelope.id, type=envelope.type, reason="not a UUID", **texts
        )
        return None
    return [i for i in ids if i is not None]


class OutboxRelay:
    """Moves committed outbox events to Redis Streams, in order, one relay at
    a time per producer (an advisory lock), woken by the producers' NOTIFY."""

    def __init__(
        self,
        producer: str,
        conninfo: str,
        pool: AsyncConnectionPool,
        redis_client: aioredis.Redis,
        batch: int = 500,
        idle_poll: float = 1.0,
        wait_replicas: int = 0,
    ) -> None:
        self.producer = producer
        # Replicas that must have a batch before the outbox lets it go: with
        # one, a primary that fails over right after taking it loses nothing
        # (its replica has it); with none, what it had not yet replicated.
        self.wait_replicas = wait_replicas
        self.conninfo = conninfo
        self.pool = pool
        self.redis = redis_client
        self.batch = batch
        self.idle_poll = idle_poll

    async def publish_pending(self) -> int:
        """Publishes one batch; returns how many events it moved.

        Two round trips to PostgreSQL: the batch is taken (deleted) in the
        same statement that takes the producer's lock (none is taken while
        another pod's relay holds it), and the deletion commits only after
        Redis took the batch (and ``wait_replicas`` replicas have it): a
        failure in between puts it back (published again: at least once,
        never lost)."""
        async with self.pool.connection() as conn, conn.pipeline(), conn.transaction():
            cursor = await conn.execute(_TAKE_BATCH, (f"outbox:{self.producer}", self.batch))
            rows = sorted(await cursor.fetchall())
            if not rows:
                return 0
            writes = []
            for _, event_type, envelope in rows:
                stream = stream_for(event_type, Envelope.FromString(envelope).key)
                xadd = ("XADD", stream, "MAXLEN", "~", STREAM_MAXLEN, "*", "envelope", envelope)
                writes.append((stream, xadd))
            await execute_replicated(self.redis, writes, self.wait_replicas, WAIT_REPLICAS_MS)
        for _, event_type, _ in rows:
            RELAYED.labels(event_type).inc()
        return len(rows)

    async def measure_backlog(self) -> None:
        """Sets the outbox's backlog gauges: rows waiting, and the oldest's age."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute(_BACKLOG)
            row = await cursor.fetchone()
        pending, oldest = row if row is not None else (0, None)
        OUTBOX_PENDING.labels(self.producer).set(pending)
        OUTBOX_OLDEST.labels(self.producer).set(oldest or 0.0)

    async def run(self) -> None:
        """Relays until cancelled (a background task of the producing service)."""
        measured = 0.0
        while not cancel_requested():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as listener:
                    channel = sql.Identifier(_channel_name(self.producer))
                    await listener.execute(sql.SQL("LISTEN {}").format(channel))
                    while not cancel_requested():
                        while await self.publish_pending() == self.batch:
                            pass  # a backlog: drain it before waiting
                        if time.monotonic() - measured >= BACKLOG_SAMPLE_SECONDS:
                            measured = time.monotonic()
                            await self.measure_backlog()
                        async for _ in listener.notifies(timeout=self.idle_poll, stop_after=1):
                            pass
            except (psycopg.Error, *UNAVAILABLE) as exc:
                log.warning("outbox_relay_failed", producer=self.producer, error=str(exc))
                await asyncio.sleep(1.0)


class EventConsumer:
    """Consumes event streams in a consumer group, with one handler per type."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        group: str,
        consumer: str,
        handlers: Mapping[str, Handler],
        *,
        block_ms: int = 1000,
        count: int = 100,
        claim_idle_ms: int = 10_000,
        max_deliveries: int = 5,
    ) -> None:
        self.redis = redis_client
        self.group = group
        self.consumer = consumer
        self.handlers = dict(handlers)
        self.type_of = {stream: t for t in handlers for stream in streams_of(t)}
        self.streams = list(self.type_of)
        # What one XREADGROUP may read: every stream on one server; on a
        # Redis Cluster, the streams of one slot (a shard of each type; each
        # group read by a loop of its own).
        self.stream_groups = [
            [self.streams[i] for i in group] for group in slot_groups(redis_client, self.streams)
        ]
        self.block_ms = block_ms
        self.count = count
        # XREADGROUP's COUNT is per stream: a read of many streams takes a
        # share of ``count`` from each (at least a few), so a backlog spread
        # over every shard is not read many times ``count`` at once.
        widest = max((len(group) for group in self.stream_groups), default=1)
        self.count_per_stream = max(_MIN_READ_PER_STREAM, count // max(1, widest))
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                # From the start of the stream: what was published before the
                # group existed is delivered too.
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def poll_once(self) -> int:
        """Handles what arrives within ``block_ms``; returns how many it read."""
        return sum(await asyncio.gather(*(self._poll(group) for group in self.stream_groups)))

    async def _poll(self, streams: Sequence[str]) -> int:
        """Handles what arrives on ``streams`` (of one slot) within ``block_ms``."""
        try:
            # redis-py types stream replies loosely: [(stream, [(id, {field: value})])].
            reply: Any = await self.redis.xreadgroup(
                self.group,
                self.consumer,
                {stream: ">" for stream in streams},
                count=self.count_per_stream,
                block=self.block_ms,
            )
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the group (restarted without its data, flushed), or
            # it was away when the consumer started: made now, it reads what
            # the stream holds from its start.
            log.warning("event_group_recreated", group=self.group, error=str(exc))
            await self.ensure_groups()
            return 0
        read = 0
        for stream, entries in reply or []:
            handled = []
            for entry_id, fields in entries:
                read += 1
                if await self._handle(as_text(stream), entry_id, fields):
                    handled.append(entry_id)
            await self._ack(as_text(stream), handled)
        return read

    async def _ack(self, stream: str, entry_ids: list[bytes]) -> None:
        """Acknowledges what a read handled, in one command: a failure before
        it has them delivered again, which at-least-once consumers expect."""
        if entry_ids:
            await self.redis.xack(stream, self.group, *entry_ids)

    async def reclaim_once(self) -> int:
        """Retries entries pending longer than ``claim_idle_ms`` (a crashed or
        failed consumer's), dead-lettering those delivered too often. Which
        streams have entries pending at all is asked of all at once (one
        round trip per node, not one per stream: this runs in the first
        shard's read loop, which waits for it)."""
        summaries = await pipelined(
            self.redis, [(stream, ("XPENDING", stream, self.group)) for stream in self.streams]
        )
        retried = 0
        for stream, summary in zip(self.streams, summaries, strict=True):
            if not summary["pending"]:
                continue
            pending: Any = await self.redis.xpending_range(
                stream, self.group, min="-", max="+", count=self.count, idle=self.claim_idle_ms
            )
            for entry in pending:
                entry_id = entry["message_id"]
                if entry["times_delivered"] >= self.max_deliveries:
                    await self._dead_letter(stream, entry_id)
                    continue
                claimed: Any = await self.redis.xclaim(
                    stream, self.group, self.consumer, self.claim_idle_ms, [entry_id]
                )
                for claimed_id, fields in claimed:
                    retried += 1
                    if await self._handle(stream, claimed_id, fields):
                        await self._ack(stream, [claimed_id])
        return retried

    async def measure_backlog(self) -> None:
        """Sets the group's backlog gauges for each type it reads: entries
        delivered but not acknowledged (over the type's streams), and how far
        (in time) its last delivered entry is behind the stream's newest (on
        the stream furthest behind). Each type's streams are asked at once."""
        for event_type in self.handlers:
            streams = streams_of(event_type)
            asked = [(s, (command, s)) for s in streams for command in _BACKLOG_INFO]
            replies = await pipelined(self.redis, asked)
            pending, behind_ms = 0, 0
            for groups, info in zip(replies[::2], replies[1::2], strict=True):
                mine = next((g for g in groups if as_text(g["name"]) == self.group), None)
                if mine is None:
                    continue
                pending += mine["pending"]
                behind_ms = max(
                    behind_ms,
                    _stream_ms(info["last-generated-id"]) - _stream_ms(mine["last-delivered-id"]),
                )
            CONSUMER_PENDING.labels(event_type, self.group).set(pending)
            CONSUMER_LAG.labels(event_type, self.group).set(behind_ms / 1000)

    async def _handle(self, stream: str, entry_id: bytes, fields: Mapping[bytes, bytes]) -> bool:
        """Handles one entry; whether it is done with (to be acknowledged)."""
        envelope = _decode(fields)
        if envelope is None:
            log.error("event_unreadable", stream=stream, entry_id=as_text(entry_id))
            await self._dead_letter(stream, entry_id)
            return False
        handler = self.handlers.get(envelope.type)
        if handler is None:
            return True
        if envelope.version != PAYLOAD_VERSION:
            HANDLED.labels(envelope.type, "unknown_version").inc()
            log.error("event_version_unknown", type=envelope.type, version=envelope.version)
            return False
        try:
            with continued_span(
                f"process {envelope.type}",
                envelope.trace_context,
                SpanKind.CONSUMER,
                {
                    "messaging.system": "redis",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": stream,
                    "messaging.consumer.group.name": self.group,
                    "messaging.message.id": envelope.id,
                },
            ):
                await handler(envelope)
        except Exception as exc:  # any failure: retried later, then dead-lettered
            HANDLED.labels(envelope.type, "failed").inc()
            log.warning("event_handler_failed", type=envelope.type, id=envelope.id, error=str(exc))
            return False
        HANDLED.labels(envelope.type, "ok").inc()
        return True

    async def _dead_letter(self, stream: str, entry_id: bytes) -> None:
        entries: Any = await self.redis.xrange(stream, min=entry_id, max=entry_id)
        for _, fields in entries:
            await self.redis.xadd(
                dead_letters_of(self.type_of[stream]), {**fields, b"group": self.group.encode()}
            )
        await self.redis.xack(stream, self.group, entry_id)
        DEAD_LETTERED.labels(self.type_of[stream], self.group).inc()
        log.error("event_dead_lettered", stream=stream, entry_id=as_text(entry_id))

    async def run(self, reclaim_every: float = 2.0) -> None:
        """Consumes until cancelled (a background task of the consuming
        service): one loop per group of streams read together, the first of
        which also reclaims and measures."""
        # With Redis away now, the first read that finds a group missing
        # (NOGROUP, as after Redis lost them) creates them.
        with contextlib.suppress(*UNAVAILABLE):
            await self.ensure_groups()
        async with asyncio.TaskGroup() as loops:
            for i, streams in enumerate(self.stream_groups):
                loops.create_task(self._consume(streams, reclaim_every if i == 0 else None))

    async def _consume(self, streams: Sequence[str], reclaim_every: float | None) -> None:
        last_reclaim = measured = time.monotonic()
        while not cancel_requested():
            try:
                await self._poll(streams)
                if reclaim_every is None:
                    continue
                if time.monotonic() - last_reclaim >= reclaim_every:
                    last_reclaim = time.monotonic()
                    await self.reclaim_once()
                if time.monotonic() - measured >= BACKLOG_SAMPLE_SECONDS:
                    measured = time.monotonic()
                    await self.measure_backlog()
            except UNAVAILABLE as exc:
                log.warning("event_consumer_failed", group=self.group, error=str(exc))
                await asyncio.sleep(1.0)


# What a stream says of its groups (their pending entries and last delivered)
# and of itself (its newest entry), in the order measure_backlog reads them.
_BACKLOG_INFO = ("XINFO GROUPS", "XINFO STREAM")


def _stream_ms(entry_id: bytes | str) -> int:
    """The milliseconds part of a stream entry id ("<ms>-<seq>")."""
    return int(as_text(entry_id).partition("-")[0])


def _decode(fields: Mapping[bytes, bytes]) -> Envelope | None:
    try:
        return Envelope.FromString(fields[b"envelope"])
    except (KeyError, DecodeError):
        return None

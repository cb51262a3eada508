"""The sockets of one realtime process and the channels they watch.

The hub holds one Redis pub/sub connection, subscribed to the channels that
at least one local client watches, and hands each event to those clients
without waiting on any of them: each client has a bounded queue, and a
client whose queue is full is cut off (it reconnects with ``since``), so a
slow client never delays the others.

Nothing is lost between the stream and a client: a client replays from the
channel's stream what it missed (``since``) while live events wait in its
buffer, and when the hub's own subscription breaks (Redis restarting), it
replays every watched channel from the last event it saw before going live
again. Each watch drops what its client already had (by position in the
stream). An event's frame is built once per process, whatever the number
of its watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from social_common.logging import get_logger
from social_common.models import encode
from social_common.redis import UNAVAILABLE as REDIS_UNAVAILABLE
from social_common.redis import as_text
from social_common.tasks import cancel_requested

log = get_logger(__name__)

CONNECTIONS = Gauge("realtime_connections", "Open WebSocket connections")
DELIVERED = Counter("realtime_events_delivered_total", "Event frames queued for clients")
CUT = Counter("realtime_clients_cut_total", "Clients disconnected for falling behind")

# Always subscribed, so the subscription is never empty while the hub runs.
_HUB_CHANNEL = "rt:hub"
# Close code for "try again later": a client that fell too far behind (with
# since), or one the server cannot take now.
TRY_AGAIN_LATER = 1013


def stream_position(event_id: str) -> tuple[int, int]:
    millis, _, seq = event_id.partition("-")
    return int(millis), int(seq or 0)


def stream_key(channel: str) -> str:
    """The stream (and pub/sub channel) of a channel such as ``post:<id>``;
    the channel is its hash tag (realtime.events routes per slot)."""
    return f"rt:{{{channel}}}"


@dataclass(frozen=True)
class Event:
    """An event of one channel, as every watcher of it is sent it."""

    id: str
    position: tuple[int, int]
    frame: str
    # The trace context of a sampled event: its socket writes join the trace.
    traceparent: str = ""

    @classmethod
    def of(
        cls, channel: str, event_id: str, event_type: bytes, data: bytes, traceparent: str = ""
    ) -> Event:
        frame = b'{"op":"event","channel":%s,"id":"%s","type":"%s","data":%s}' % (
            encode(channel),
            event_id.encode(),
            event_type,
            data,
        )
        return cls(event_id, stream_position(event_id), frame.decode(), traceparent)


@dataclass
class Watch:
    """One client's subscription to one channel."""

    channel: str
    last: tuple[int, int] = (0, 0)
    # Live events that arrived while the client was replaying what it missed.
    pending: list[Event] | None = field(default_factory=list)


class Client:
    def __init__(
        self, user_id: str, queue_size: int, pending_limit: int, cut: Callable[[], None]
    ) -> None:
        self.user_id = user_id
        # Frames to write; an Event where its write is traced.
        self.queue: asyncio.Queue[str | Event] = asyncio.Queue(queue_size)
        # Live events held while a replay runs, at most (beyond: cut off).
        self.pending_limit = pending_limit
        self.watches: dict[str, Watch] = {}
        self._cut = cut
        self.cut_off = False

    def send(self, frame: dict[str, Any]) -> None:
        self._put(encode(frame).decode())

    def deliver(self, key: str, event: Event) -> None:
        """Queues a live event for the client (held while it replays)."""
        watch = self.watches.get(key)
        if watch is None or self.cut_off:
            return
        if watch.pending is not None:
            if len(watch.pending) >= self.pending_limit:
                self._cut_off()
                return
            watch.pending.append(event)
        elif self._new(watch, event):
            self._put(event if event.traceparent else event.frame)

    async def replay(self, key: str, event: Event) -> None:
        """Queues a past event, waiting for room: a replay goes at the
        client's pace (live events wait meanwhile, up to ``pending_limit``)."""
        if self._new(self.watches[key], event) and not self.cut_off:
            await self.queue.put(event.frame)

    @staticmethod
    def _new(watch: Watch, event: Event) -> bool:
        """Whether the watch has not had ``event`` yet (a replay and the live
        stream overlap); it has from now on."""
        if event.position <= watch.last:
            return False
        watch.last = event.position
        DELIVERED.inc()
        return True

    def go_live(self, key: str) -> None:
        """Ends a replay: what arrived live meanwhile follows, in order."""
        watch = self.watches[key]
        pending, watch.pending = watch.pending or [], None
        for event in pending:
            self.deliver(key, event)

    def _put(self, frame: str | Event) -> None:
        if self.cut_off:
            return
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self._cut_off()

    def _cut_off(self) -> None:
        if not self.cut_off:
            self.cut_off = True
            CUT.inc()
            self._cut()


class Hub:
    def __init__(self, redis_client: aioredis.Redis) -> None:
        self.redis = redis_client
        self.watchers: dict[str, set[Client]] = {}
        # The name clients know each watched stream by (e.g. "user").
        self.channels: dict[str, str] = {}
        # The last event id seen per watched stream: where a replay resumes.
        self.last_seen: dict[str, str] = {}
        self._pubsub: Any = None
        self._confirmed: dict[str, asyncio.Event] = {}
        self._live = asyncio.Event()

    async def watch(self, key: str, channel: str, client: Client) -> None:
        """Adds ``client`` to the watchers of stream ``key`` (its ``channel``);
        returns once this process's subscription to it is confirmed by Redis
        (so an event published from now on reaches the client)."""
        self.channels[key] = channel
        watchers = self.watchers.setdefault(key, set())
        watchers.add(client)
        if key not in self._confirmed:
            self._confirmed[key] = asyncio.Event()
            await self._live.wait()
            await self._pubsub.subscribe(key)
        await asyncio.wait_for(self._confirmed[key].wait(), timeout=5.0)

    async def unwatch(self, key: str, client: Client) -> None:
        watchers = self.watchers.get(key)
        if watchers is None:
            return
        watchers.discard(client)
        if not watchers:
            del self.watchers[key]
            del self.channels[key]
            self._confirmed.pop(key, None)
            self.last_seen.pop(key, None)
            if self._live.is_set():
                # If the subscription is being lost, the next one leaves the key out.
                with contextlib.suppress(*REDIS_UNAVAILABLE):
                    await self._pubsub.unsubscribe(key)

    def note(self, key: str, event_id: str) -> None:
        """Records that the stream ``key`` reached ``event_id`` (for catching up)."""
        seen = self.last_seen.get(key)
        if seen is None or stream_position(event_id) > stream_position(seen):
            self.last_seen[key] = event_id

    def event(
        self, key: str, event_id: str, event_type: bytes, data: bytes, traceparent: str = ""
    ) -> Event:
        """An event of the watched stream ``key``, framed for its watchers."""
        return Event.of(self.channels[key], event_id, event_type, data, traceparent)

    def _dispatch(
        self, key: str, event_id: str, event_type: bytes, data: bytes, traceparent: str = ""
    ) -> None:
        if key not in self.channels:
            return  # no longer watched here
        event = self.event(key, event_id, event_type, data, traceparent)
        self.note(key, event_id)
        for client in list(self.watchers.get(key, ())):
            client.deliver(key, event)

    async def _catch_up(self) -> None:
        """After a new subscription: what the watched streams got meanwhile."""
        for key, seen in list(self.last_seen.items()):
            entries: Any = await self.redis.xrange(key, min=f"({seen}", max="+")
            for entry_id, fields in entries:
                self._dispatch(key, as_text(entry_id), fields[b"type"], fields[b"data"])

    async def run(self) -> None:
        """Keeps the subscription and dispatches events until cancelled (a background task)."""
        while not cancel_requested():
            try:
                async with self.redis.pubsub() as pubsub:
                    self._pubsub = pubsub
                    # Caught up once Redis confirms all of these: an event
                    # published before then is in the stream when read, and
                    # one published after reaches the subscription.
                    unconfirmed = {_HUB_CHANNEL, *self.watchers}
                    await pubsub.subscribe(*unconfirmed)
                    self._live.set()
                    async for message in pubsub.listen():
                        if cancel_requested():
                            return
                        kind, key = message["type"], as_text(message["channel"])
                        if kind == "subscribe":
                            if key in self._confirmed:
                                self._confirmed[key].set()
                            if unconfirmed:
                                unconfirmed.discard(key)
                                if not unconfirmed:
                                    await self._catch_up()
                        elif kind == "message":
                            event_id, event_type, traceparent, data = message["data"].split(b"|", 3)
                            self._dispatch(
                                key, event_id.decode(), event_type, data, traceparent.decode()
                            )
            except REDIS_UNAVAILABLE as exc:
                log.warning("hub_subscription_lost", error=str(exc))
            self._live.clear()
            for confirmed in self._confirmed.values():
                confirmed.clear()
            await asyncio.sleep(0.5)

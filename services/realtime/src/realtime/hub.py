"""The sockets of one realtime process and the channels they watch.

The hub holds a Redis pub/sub connection per shard (the one server, or each
primary of a Redis Cluster that serves a watched channel's slot), subscribed
(SSUBSCRIBE: sharded pub/sub) to the channels of that shard that at least
one local client watches, and hands each event to those clients
without waiting on any of them: each client has a bounded queue, and a
client whose queue is full is cut off (it reconnects with ``since``), so a
slow client never delays the others.

Nothing is lost between the stream and a client: a client replays from the
channel's stream what it missed (``since``) while live events wait in its
buffer, and when a shard's subscription breaks (Redis restarting, a primary
failing over, its slots moving), the hub reads the cluster's map again,
subscribes each of the shard's channels where it now lives, and replays it
from the last event it saw before going live again. Each watch drops what
its client already had (by position in the stream). An event's frame is
built once per process, whatever the number of its watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from social_common.logging import get_logger
from social_common.models import encode
from social_common.redis import UNAVAILABLE as REDIS_UNAVAILABLE
from social_common.redis import (
    as_text,
    channel_on,
    learn_cluster_map,
    node_of,
    node_pubsub,
    slot_groups,
    stream_position,
)
from social_common.tasks import cancel_requested

log = get_logger(__name__)

CONNECTIONS = Gauge("realtime_connections", "Open WebSocket connections")
DELIVERED = Counter("realtime_events_delivered_total", "Event frames queued for clients")
CUT = Counter("realtime_clients_cut_total", "Clients disconnected for falling behind")

# The channel each shard's subscription always holds (on a cluster, tagged
# into one of the shard's slots); nothing is published on it.
_ANCHOR = "rt:hub"
# Close code for "try again later": a client that fell too far behind (with
# since), or one the server cannot take now.
TRY_AGAIN_LATER = 1013


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
    pending: deque[Event] | None = field(default_factory=deque)


class Client:
    def __init__(
        self, user_id: str, queue_size: int, pending_limit: int, cut: Callable[[], None]
    ) -> None:
        self.user_id = user_id
        # Frames to write; an Event where its write is traced.
        self.queue: asyncio.Queue[str | Event] = asyncio.Queue(queue_size)
        self._crowded_at = (queue_size + 1) // 2
        # Live events held while a replay runs, at most (beyond: cut off).
        self.pending_limit = pending_limit
        self.watches: dict[str, Watch] = {}
        self._cut = cut
        self.cut_off = False

    def send(self, frame: dict[str, Any]) -> None:
        self._put(encode(frame).decode())

    def deliver(self, key: str, event: Event) -> bool:
        """Queues a live event for the client (held while it replays); whether
        half its send queue or more now waits to be written."""
        watch = self.watches.get(key)
        if watch is None or self.cut_off:
            return False
        if watch.pending is not None:
            if len(watch.pending) >= self.pending_limit:
                self._cut_off()
            else:
                watch.pending.append(event)
            return False
        if not self._new(watch, event):
            return False
        self._put(event if event.traceparent else event.frame)
        return self.queue.qsize() >= self._crowded_at

    async def replay(self, key: str, event: Event) -> None:
        """Queues an event of a replay (a past one, or one that came live
        meanwhile), waiting for room: a replay goes at the client's pace (live
        events wait meanwhile, up to ``pending_limit``)."""
        if self._new(self.watches[key], event) and not self.cut_off:
            await self.queue.put(event if event.traceparent else event.frame)

    @staticmethod
    def _new(watch: Watch, event: Event) -> bool:
        """Whether the watch has not had ``event`` yet (a replay and the live
        stream overlap); it has from now on."""
        if event.position <= watch.last:
            return False
        watch.last = event.position
        DELIVERED.inc()
        return True

    async def go_live(self, key: str) -> None:
        """Ends a replay: what arrived live meanwhile follows, in order and
        at the client's pace as the replay did (what arrives meanwhile waits
        behind it); then live events are queued as they come."""
        watch = self.watches[key]
        while watch.pending:
            await self.replay(key, watch.pending.popleft())
        watch.pending = None

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
        self._confirmed: dict[str, asyncio.Event] = {}
        # The subscription of each shard (by node; "" on one server) and the
        # shard each watched stream is subscribed on.
        self._shards: dict[str, _Shard] = {}
        self._shard_of: dict[str, _Shard] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._running = asyncio.Event()

    async def watch(self, key: str, channel: str, client: Client) -> None:
        """Adds ``client`` to the watchers of stream ``key`` (its ``channel``);
        returns once this process's subscription to it is confirmed by Redis
        (so an event published from now on reaches the client)."""
        self.channels[key] = channel
        watchers = self.watchers.setdefault(key, set())
        watchers.add(client)
        if key not in self._confirmed:
            self._confirmed[key] = asyncio.Event()
            await self._place(key)
        await asyncio.wait_for(self._confirmed[key].wait(), timeout=5.0)

    async def _place(self, key: str) -> None:
        """Subscribes ``key`` on the shard that now holds it."""
        await self._running.wait()
        shard = self._shard(await node_of(self.redis, key))
        self._shard_of[key] = shard
        await shard.add(key)

    def _shard(self, node: str) -> _Shard:
        shard = self._shards.get(node)
        if shard is None:
            assert self._tasks is not None  # set before _running
            shard = self._shards[node] = _Shard(self, node)
            self._tasks.create_task(shard.run())
        return shard

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
            shard = self._shard_of.pop(key, None)
            if shard is not None:
                await shard.remove(key)

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

    async def _dispatch(
        self, key: str, event_id: str, event_type: bytes, data: bytes, traceparent: str = ""
    ) -> None:
        """Queues an event for its watchers. If one's queue is half full, the
        clients' senders have a turn before the next event: a burst read at
        once (what Redis sent while this loop was busy) would otherwise fill
        the queue of a client that reads promptly, and cut it off as too slow."""
        if key not in self.channels:
            return  # no longer watched here
        event = self.event(key, event_id, event_type, data, traceparent)
        self.note(key, event_id)
        crowded = False
        for client in list(self.watchers.get(key, ())):
            crowded |= client.deliver(key, event)
        if crowded:
            await asyncio.sleep(0)

    async def _catch_up(self, keys: set[str]) -> None:
        """After a new subscription: what the watched streams got meanwhile."""
        for key in list(keys):
            seen = self.last_seen.get(key)
            if seen is None:
                continue
            entries: Any = await self.redis.xrange(key, min=f"({seen}", max="+")
            for entry_id, fields in entries:
                await self._dispatch(key, as_text(entry_id), fields[b"type"], fields[b"data"])

    def _confirm(self, key: str) -> None:
        if key in self._confirmed:
            self._confirmed[key].set()

    async def _lost(self, shard: _Shard) -> None:
        """A shard's subscription ended: its streams are unconfirmed until
        subscribed again, each where the cluster's map now puts it."""
        keys = set(shard.keys)
        for key in keys:
            if key in self._confirmed:
                self._confirmed[key].clear()
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await learn_cluster_map(self.redis)
        for key in keys:
            if key in self.watchers and await node_of(self.redis, key) != shard.node:
                shard.keys.discard(key)
                await self._place(key)

    async def run(self) -> None:
        """Keeps the shards' subscriptions and dispatches events until
        cancelled (a background task): each shard's loop is a task of this one."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self._running.set()
            await asyncio.Event().wait()  # until cancelled


class _Shard:
    """The hub's subscription on one server: the watched streams it holds."""

    def __init__(self, hub: Hub, node: str) -> None:
        self.hub = hub
        self.node = node
        self.keys: set[str] = set()
        self._pubsub: Any = None
        self._live = asyncio.Event()
        self._wanted = asyncio.Event()

    async def add(self, key: str) -> None:
        self.keys.add(key)
        self._wanted.set()
        await self._live.wait()
        # Subscribed by the loop if it went live after the key was added;
        # twice does no harm.
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await self._pubsub.ssubscribe(key)

    async def remove(self, key: str) -> None:
        self.keys.discard(key)
        if self._live.is_set():
            # If the subscription is being lost, the next one leaves the key out.
            with contextlib.suppress(*REDIS_UNAVAILABLE):
                await self._pubsub.sunsubscribe(key)

    async def run(self) -> None:
        while not cancel_requested():
            await self._wanted.wait()
            try:
                await self._subscribe_and_dispatch()
            except REDIS_UNAVAILABLE as exc:
                log.warning("hub_subscription_lost", node=self.node, error=str(exc))
                await asyncio.sleep(0.5)
            self._live.clear()
            try:
                await self.hub._lost(self)  # the hub's half of the shard
            except REDIS_UNAVAILABLE as exc:
                # The cluster's map unreadable now: the keys not yet moved stay
                # here, tried again on this node, and moved after the next loss.
                log.warning("hub_map_unread", node=self.node, error=str(exc))
            if not self.keys:
                self._wanted.clear()

    async def _subscribe_and_dispatch(self) -> None:
        async with node_pubsub(self.hub.redis, self.node) as pubsub:
            self._pubsub = pubsub
            # Caught up once Redis confirms all of these: an event published
            # before then is in the stream when read, and one published after
            # reaches the subscription.
            keys = sorted(self.keys)
            if not keys:
                return  # all unwatched meanwhile
            # Always subscribed, so the subscription is never empty: a
            # command on an empty one checks the connection's health by
            # reading its reply, under the reader waiting for messages.
            anchor = await channel_on(self.hub.redis, self.node, _ANCHOR)
            await pubsub.ssubscribe(anchor)
            unconfirmed = set(keys)
            for group in slot_groups(self.hub.redis, keys):
                await pubsub.ssubscribe(*(keys[i] for i in group))
            self._live.set()
            while not cancel_requested():
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind, key = message["type"], as_text(message["channel"])
                if kind == "ssubscribe":
                    self.hub._confirm(key)
                    if unconfirmed:
                        unconfirmed.discard(key)
                        if not unconfirmed:
                            await self.hub._catch_up(self.keys)
                elif kind == "smessage":
                    event_id, event_type, traceparent, data = message["data"].split(b"|", 3)
                    await self.hub._dispatch(
                        key, event_id.decode(), event_type, data, traceparent.decode()
                    )
                elif kind == "sunsubscribe" and (key in self.keys or key == anchor):
                    return  # the server's doing: the channel's slot moved

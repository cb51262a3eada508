"""A two-layer cache of objects stored as JSON: in-process (L1) in front of
Redis (L2). A cache may be typed (``kind``, e.g. a msgspec Struct): Redis
holds its JSON and L1 the decoded object, so a hit costs no conversion.

Every entry carries a version, and a write never replaces a newer version
with an older one, in either layer: a reader that loaded a row just before a
writer changed it cannot put the old row back after the writer's fresh one
(in Redis the comparison is one Lua script). Writers ``put_many`` the new
value (or a tombstone, ``None``, for something deleted) with the row's new
version right after their commit; the same process reads its own write at
once. Other processes learn of it through a :class:`Broadcast` (Redis
pub/sub, milliseconds) and drop their L1 copies; the L1 lifetime bounds
staleness if a broadcast is lost, and each (re)subscription clears L1.
While Redis cannot be reached, reads go to the source (through L1).

Hits and misses per layer are exported as ``cache_requests_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
from prometheus_client import Counter

from social_common.logging import get_logger
from social_common.models import encode
from social_common.redis import UNAVAILABLE as REDIS_UNAVAILABLE
from social_common.redis import (
    learn_cluster_map,
    mget,
    node_of,
    node_pubsub,
    run_script,
    slot_groups,
)
from social_common.tasks import cancel_requested

log = get_logger(__name__)

REQUESTS = Counter(
    "cache_requests_total",
    "Cache lookups by cache, layer and outcome",
    ["cache", "layer", "outcome"],
)

# Stored in Redis as b"<version>|<json>"; an empty JSON part is a tombstone.
# A stored value of another shape counts as older than anything.
_PUT_IF_NEWER = """
for i, key in ipairs(KEYS) do
  local value = ARGV[2 * i - 1]
  local version = tonumber(string.match(value, '^(%d+)|'))
  local current = redis.call('GET', key)
  local current_version = current and tonumber(string.match(current, '^(%d+)|'))
  if not current_version or current_version <= version then
    redis.call('SET', key, value, 'EX', ARGV[2 * i])
  end
end
return 0
"""

Loader = Callable[[Sequence[str]], Awaitable[Mapping[str, tuple[int, Any]]]]
# A loaded or cached entry: (version, the object, or None for a tombstone).
Entry = tuple[int, Any]


# What a newer version, known to exist but not held, leaves in L1: a floor
# that refuses older versions a reader may still be about to put.
_FLOOR = object()


class LocalCache:
    """L1: a bounded dict of entries that expire after ``ttl_ms``."""

    def __init__(self, ttl_ms: int, max_entries: int) -> None:
        self.ttl = ttl_ms / 1000
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, int, Any]] = OrderedDict()

    def get(self, key: str) -> Entry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, version, value = found
        if expires < time.monotonic():
            del self._entries[key]
            return None
        if value is _FLOOR:
            return None
        return version, value

    def put(self, key: str, version: int, value: Any) -> None:
        if self.max_entries == 0 or self.ttl <= 0:
            return
        current = self._entries.get(key)
        if current is not None and current[1] > version:
            return
        self._entries[key] = (time.monotonic() + self.ttl, version, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, key: str, older_than: int | None = None) -> None:
        """Forgets the entry; with ``older_than``, only an older one, and
        refuses versions older than that until the entry expires."""
        if older_than is None:
            self._entries.pop(key, None)
            return
        current = self._entries.get(key)
        if current is None or current[1] < older_than:
            self.put(key, older_than, _FLOOR)

    def clear(self) -> None:
        self._entries.clear()


class TieredCache:
    """Objects by key, from L1, else Redis, else ``load`` (which fills both)."""

    def __init__(
        self,
        redis_client: aioredis.Redis,
        name: str,
        *,
        local_ttl_ms: int,
        local_max_entries: int,
        shared_ttl_seconds: int,
        kind: Any = Any,
    ) -> None:
        self.redis = redis_client
        self.name = name
        self._decoder = msgspec.json.Decoder(kind)
        self.local = LocalCache(local_ttl_ms, local_max_entries)
        self.shared_ttl = shared_ttl_seconds
        self._put_script = redis_client.register_script(_PUT_IF_NEWER)
        self._l1_hit = REQUESTS.labels(name, "l1", "hit")
        self._l1_miss = REQUESTS.labels(name, "l1", "miss")
        self._l2_hit = REQUESTS.labels(name, "l2", "hit")
        self._l2_miss = REQUESTS.labels(name, "l2", "miss")

    def _redis_key(self, key: str) -> str:
        # No hash tag: on a cluster the entries spread over every shard, and a
        # read or write of many is split per slot (nothing needs them atomic).
        return f"cache:{self.name}:{key}"

    def _decode(self, raw: bytes) -> Entry | None:
        """The stored entry, or None for one of another shape (written by an
        older release, say): reloaded from the source, whose entry replaces it."""
        version, _, body = raw.partition(b"|")
        try:
            return int(version), (self._decoder.decode(body) if body else None)
        except (ValueError, msgspec.DecodeError):
            return None

    async def get_many(self, keys: Iterable[str], load: Loader) -> dict[str, Any]:
        """The live objects among ``keys`` (tombstoned or unknown ones are left out)."""
        found: dict[str, Any] = {}
        wanted: list[str] = []
        hits = 0
        for key in keys:
            entry = self.local.get(key)
            if entry is None:
                wanted.append(key)
                continue
            hits += 1
            if entry[1] is not None:
                found[key] = entry[1]
        if hits:
            self._l1_hit.inc(hits)
        if not wanted:
            return found
        self._l1_miss.inc(len(wanted))
        reachable = True
        try:
            stored = await mget(self.redis, [self._redis_key(k) for k in wanted])
        except REDIS_UNAVAILABLE as exc:
            # Without Redis, from the source (L1 still spares it repeats).
            log.warning("cache_unavailable", cache=self.name, error=str(exc))
            stored, reachable = [None] * len(wanted), False
        missing: list[str] = []
        for key, raw in zip(wanted, stored, strict=True):
            entry = None if raw is None else self._decode(raw)
            if entry is None:
                missing.append(key)
                continue
            version, value = entry
            self.local.put(key, version, value)
            if value is not None:
                found[key] = value
        self._l2_hit.inc(len(wanted) - len(missing))
        if missing:
            self._l2_miss.inc(len(missing))
            loaded = await load(missing)
            self._put_local(loaded)
            if reachable:
                try:
                    await self._put_shared(loaded)
                except REDIS_UNAVAILABLE as exc:
                    log.warning("cache_unavailable", cache=self.name, error=str(exc))
            found.update((k, v) for k, (_, v) in loaded.items() if v is not None)
        return found

    async def put_many(self, entries: Mapping[str, Entry]) -> None:
        """Stores entries in both layers unless a newer version is there
        (L1 before anything is awaited)."""
        self._put_local(entries)
        await self._put_shared(entries)

    def _put_local(self, entries: Mapping[str, Entry]) -> None:
        for key, (version, value) in entries.items():
            self.local.put(key, version, value)

    async def _put_shared(self, entries: Mapping[str, Entry]) -> None:
        if not entries:
            return
        keys = [self._redis_key(key) for key in entries]
        values = [_encode(version, value) for version, value in entries.values()]
        await run_script(
            self.redis,
            self._put_script,
            [
                (
                    [keys[i] for i in group],
                    [arg for i in group for arg in (values[i], self.shared_ttl)],
                )
                for group in slot_groups(self.redis, keys)
            ],
        )


class Broadcast:
    """Tells every process of a service that something it may hold in L1 changed.

    Over sharded pub/sub (SPUBLISH, SSUBSCRIBE): on a Redis Cluster the
    channel lives on the shard that serves its slot, not on every node."""

    def __init__(self, redis_client: aioredis.Redis, channel: str) -> None:
        self.redis = redis_client
        self.channel = channel

    async def publish(self, message: Any) -> None:
        await self.redis.spublish(self.channel, encode(message))

    def _deliver(self, on_message: Callable[[Any], None], data: bytes) -> None:
        try:
            on_message(msgspec.json.decode(data))
        except Exception:  # one bad message must not end the listener
            log.exception("broadcast_message_failed", channel=self.channel)

    async def listen(self, on_message: Callable[[Any], None], on_reset: Callable[[], None]) -> None:
        """Calls ``on_message`` with each message, forever (a background task);
        ``on_reset`` whenever a subscription starts, since whatever was
        published while there was none is lost."""
        while not cancel_requested():
            try:
                node = await node_of(self.redis, self.channel)
                async with node_pubsub(self.redis, node) as pubsub:
                    await pubsub.ssubscribe(self.channel)
                    async for message in pubsub.listen():
                        if cancel_requested():
                            return
                        if message["type"] == "ssubscribe":
                            on_reset()
                        elif message["type"] == "smessage":
                            self._deliver(on_message, message["data"])
                        elif message["type"] == "sunsubscribe":
                            # The server's doing (the channel's slot moved),
                            # which redis-py does not count as the end of
                            # the subscription: only one it asked for.
                            break
                await learn_cluster_map(self.redis)
            except REDIS_UNAVAILABLE as exc:
                log.warning("broadcast_listener_failed", channel=self.channel, error=str(exc))
                await asyncio.sleep(1.0)
                with contextlib.suppress(*REDIS_UNAVAILABLE):
                    await learn_cluster_map(self.redis)


def _encode(version: int, value: Any) -> bytes:
    return b"%d|" % version + (b"" if value is None else encode(value))

"""Home timelines in Redis: one sorted set of post ids per user, newest first.

All members have score 0, so the set is ordered by member, and post ids are
UUIDv7 strings whose order is their creation order: ``ZREVRANGEBYLEX`` pages
through a timeline with the last id seen as the cursor, and equal times need
no tie-breaker. Each set keeps the newest ``size`` ids (older pages come
from Postgres). Two markers sort above every id: ``~b`` says a rebuild has
started (fan-out writes into the set from then on, so nothing posted during
the rebuild is missed), ``~r`` that the timeline is complete.

Fan-out only adds to timelines that exist: an inactive user's timeline
expires after ``ttl_seconds`` and is rebuilt from Postgres when next read.
Beside each timeline, the set of whom the user follows (for the authors
with very many followers, who are not fanned out but merged in at read time).

Keys of one user are touched together by multi-key commands: under Redis
Cluster they would need a hash tag; this runs on one Redis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from posts.likes import LikedSets, liked_key

BUILDING = "~b"
READY = "~r"
MARKERS = 2
# The set of authors whose posts are merged at read time.
CELEBRITIES = "timeline:celebrities"

# One round trip for a page of a home timeline and what the reader likes of it.
_PAGE = """
local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], '-', 'LIMIT', 0, tonumber(ARGV[2]))
local ready = redis.call('ZSCORE', KEYS[1], '~r')
local count = redis.call('ZCARD', KEYS[1])
local celebrities = redis.call('SINTER', KEYS[2], KEYS[3])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local liked = redis.call('SMISMEMBER', KEYS[4], ARGV[4], ARGV[5], unpack(ids))
return {ids, ready and 1 or 0, count, celebrities, liked}
"""

_ADD_IF_EXISTS = """
local keep = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    for i = 2, #ARGV do
      redis.call('ZADD', key, 0, ARGV[i])
    end
    redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
  end
end
return 0
"""


def timeline_key(user_id: str) -> str:
    return f"timeline:{user_id}"


def following_key(user_id: str) -> str:
    return f"timeline:{user_id}:following"


@dataclass(frozen=True)
class TimelinePage:
    ready: bool
    ids: list[str]
    # Whether older posts than the set holds may exist (the set is full).
    truncated: bool
    # The followed authors whose posts are merged at read time.
    celebrities: list[str]
    # SMISMEMBER of the reader's liked set: its two markers, then each id.
    liked: list[int]


class Timelines:
    def __init__(self, redis_client: aioredis.Redis, size: int, ttl_seconds: int) -> None:
        self.redis = redis_client
        self.size = size
        self.ttl = ttl_seconds
        self._add_if_exists = redis_client.register_script(_ADD_IF_EXISTS)
        self._page = redis_client.register_script(_PAGE)

    async def page(
        self, user_id: str, before: str | None, limit: int, liked: LikedSets
    ) -> TimelinePage:
        """Up to ``limit`` ids older than ``before`` (the newest when None),
        with which of them the user likes."""
        # Markers sort above every id: starting below "~" leaves them out.
        start = f"({before}" if before else "(~"
        ids, ready, count, celebrities, liked_reply = await self._page(
            keys=[timeline_key(user_id), following_key(user_id), CELEBRITIES, liked_key(user_id)],
            args=[start, limit, self.ttl, *liked.markers],
        )
        return TimelinePage(
            ready=bool(ready),
            ids=[_text(i) for i in ids],
            truncated=count >= self.size + MARKERS,
            celebrities=[_text(c) for c in celebrities],
            liked=list(liked_reply),
        )

    async def followees(self, user_id: str) -> list[str]:
        members = await self.redis.smembers(following_key(user_id))
        return [m for m in (_text(m) for m in members) if m != "~"]

    async def start_rebuild(self, user_id: str) -> None:
        """Marks the timeline as being built: fan-out adds to it from now on."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(timeline_key(user_id), {BUILDING: 0})
            pipe.expire(timeline_key(user_id), self.ttl)
            await pipe.execute()

    async def finish_rebuild(
        self, user_id: str, followees: Sequence[str], recent_ids: Sequence[str]
    ) -> None:
        key, following = timeline_key(user_id), following_key(user_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {**dict.fromkeys(recent_ids, 0), READY: 0})
            pipe.zremrangebyrank(key, 0, -(self.size + MARKERS + 1))
            pipe.delete(following)
            # A marker member: following nobody still leaves a (known) set.
            pipe.sadd(following, "~", *followees)
            pipe.expire(key, self.ttl)
            pipe.expire(following, self.ttl)
            await pipe.execute()

    async def add(self, user_ids: Iterable[str], post_ids: Sequence[str]) -> None:
        """Adds posts to the timelines of ``user_ids`` that exist."""
        keys = [timeline_key(u) for u in user_ids]
        if keys and post_ids:
            await self._add_if_exists(keys=keys, args=[self.size + MARKERS, *post_ids])

    async def remove(self, user_ids: Iterable[str], post_ids: Sequence[str]) -> None:
        if not post_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zrem(timeline_key(user_id), *post_ids)
            await pipe.execute()

    async def followed(self, follower: str, followee: str, recent_ids: Sequence[str]) -> None:
        await self.add([follower], recent_ids)
        await self._move_followee(follower, followee, add=True)

    async def unfollowed(self, follower: str, followee: str, recent_ids: Sequence[str]) -> None:
        await self.remove([follower], recent_ids)
        await self._move_followee(follower, followee, add=False)

    async def _move_followee(self, follower: str, followee: str, *, add: bool) -> None:
        following = following_key(follower)
        # Only a known set is changed; a missing one is rebuilt whole when needed.
        if await self.redis.exists(following):
            await (self.redis.sadd if add else self.redis.srem)(following, followee)

    async def mark_celebrity(self, author_id: str, *, on: bool) -> None:
        await (self.redis.sadd if on else self.redis.srem)(CELEBRITIES, author_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""Home timelines in Redis: one sorted set of post ids per user, newest first.

All members have score 0, so the set is ordered by member, and post ids are
UUIDv7 strings whose order is their creation order: ``ZREVRANGEBYLEX`` pages
through a timeline with the last id seen as the cursor, and equal times need
no tie-breaker. Each set keeps the newest ``size`` ids. Markers sort above
every id: ``~b`` says a rebuild has started (fan-out writes into the set from
then on, so nothing posted during the rebuild is missed), ``~r`` that the
timeline is complete, ``~t`` that older posts exist than the set keeps (pages
past the end come from Postgres).

Fan-out only adds to timelines that exist: an inactive user's timeline
expires after ``ttl_seconds`` and is rebuilt from Postgres when next read.
Beside each timeline, the set of whom the user follows (for the authors
with very many followers, who are not fanned out but merged in at read time).
A follow or unfollow forgets both (the next read rebuilds them), whatever
order the events arrive in; a rebuild that was forgotten while it ran is
not finished.

Keys: ``timeline:{<user>}``, ``timeline:{<user>}:following`` and the
user's liked set ``liked:{<user>}`` (posts.likes) carry the user id as their
hash tag: one page reads all three in one script, so on a Redis Cluster they
share a slot. The authors merged in at read time, ``timeline:celebrities``,
are one set of everyone's: a page is given them (as the process last read
them, at most a second ago) rather than reading them beside the user's keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis
from social_common.redis import as_text, run_script, slot_groups

from posts.likes import LikedSets, liked_key

BUILDING = "~b"
MARKERS = 3
# The set of authors whose posts are merged at read time.
CELEBRITIES = "timeline:celebrities"
# How long a process reads the set of them from its own copy.
CELEBRITIES_FRESH_S = 1.0

# One round trip for a page of a home timeline, what the reader likes of it,
# and which of the authors merged in at read time the reader follows.
# KEYS: timeline, following, liked. ARGV: start, limit, ttl, the liked set's
# two markers, then the authors merged in at read time.
_PAGE = """
local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], '-', 'LIMIT', 0, tonumber(ARGV[2]))
local ready = redis.call('ZSCORE', KEYS[1], '~r')
local truncated = redis.call('ZSCORE', KEYS[1], '~t')
local celebrities = {}
if #ARGV > 5 then
  local followed = redis.call('SMISMEMBER', KEYS[2], unpack(ARGV, 6))
  for i, yes in ipairs(followed) do
    if yes == 1 then
      celebrities[#celebrities + 1] = ARGV[5 + i]
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local liked = redis.call('SMISMEMBER', KEYS[3], ARGV[4], ARGV[5], unpack(ids))
return {ids, ready and 1 or 0, truncated and 1 or 0, celebrities, liked}
"""

# Keeps the newest ids (and the markers); marks the set truncated if any went.
_CAP = """
local function cap(key, keep)
  if redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1)) > 0 then
    redis.call('ZADD', key, 0, '~t')
  end
end
"""

_ADD_IF_EXISTS = (
    _CAP
    + """
local keep = tonumber(ARGV[1])
local written = 0
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    for i = 2, #ARGV do
      redis.call('ZADD', key, 0, ARGV[i])
    end
    cap(key, keep)
    written = written + 1
  end
end
return written
"""
)

# KEYS: timeline, following. ARGV: ttl, keep, truncated (1/0), the number of
# followees, the followees, then the post ids.
_FINISH_REBUILD = (
    _CAP
    + """
if not redis.call('ZSCORE', KEYS[1], '~b') then
  return 0
end
local followees = tonumber(ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('SADD', KEYS[2], '~')
for i = 5, 4 + followees do
  redis.call('SADD', KEYS[2], ARGV[i])
end
for i = 5 + followees, #ARGV do
  redis.call('ZADD', KEYS[1], 0, ARGV[i])
end
redis.call('ZADD', KEYS[1], 0, '~r')
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], 0, '~t')
end
cap(KEYS[1], tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"""
)


def timeline_key(user_id: str) -> str:
    return f"timeline:{{{user_id}}}"


def following_key(user_id: str) -> str:
    return f"timeline:{{{user_id}}}:following"


def page_keys(user_id: str) -> list[str]:
    """The keys a page of ``user_id``'s home timeline reads, in one script."""
    return [timeline_key(user_id), following_key(user_id), liked_key(user_id)]


@dataclass(frozen=True)
class TimelinePage:
    ready: bool
    ids: list[str]
    # Whether older posts exist than the set holds.
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
        self._finish_rebuild = redis_client.register_script(_FINISH_REBUILD)
        self._celebrities: list[str] = []
        self._celebrities_read_at = -CELEBRITIES_FRESH_S

    async def celebrities(self) -> list[str]:
        """The authors merged in at read time, as read at most a second ago."""
        now = time.monotonic()
        if now - self._celebrities_read_at >= CELEBRITIES_FRESH_S:
            members = await self.redis.smembers(CELEBRITIES)
            self._celebrities = [as_text(m) for m in members]
            self._celebrities_read_at = now
        return self._celebrities

    async def page(
        self, user_id: str, before: str | None, limit: int, liked: LikedSets
    ) -> TimelinePage:
        """Up to ``limit`` ids older than ``before`` (the newest when None),
        with which of them the user likes."""
        # Markers sort above every id: starting below "~" leaves them out.
        start = f"({before}" if before else "(~"
        ids, ready, truncated, celebrities, liked_reply = await self._page(
            keys=page_keys(user_id),
            args=[start, limit, self.ttl, *liked.markers, *await self.celebrities()],
        )
        return TimelinePage(
            ready=bool(ready),
            ids=[as_text(i) for i in ids],
            truncated=bool(truncated),
            celebrities=[as_text(c) for c in celebrities],
            liked=list(liked_reply),
        )

    async def followees(self, user_id: str) -> list[str]:
        members = await self.redis.smembers(following_key(user_id))
        return [m for m in (as_text(m) for m in members) if m != "~"]

    async def start_rebuild(self, user_id: str) -> None:
        """Marks the timeline as being built: fan-out adds to it from now on."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(timeline_key(user_id), {BUILDING: 0})
            pipe.expire(timeline_key(user_id), self.ttl)
            await pipe.execute()

    async def finish_rebuild(
        self, user_id: str, followees: Sequence[str], recent_ids: Sequence[str], *, more: bool
    ) -> bool:
        """Completes a rebuild (``more``: older posts exist than ``recent_ids``);
        False when the timeline was forgotten meanwhile (and stays so)."""
        finished = await self._finish_rebuild(
            keys=[timeline_key(user_id), following_key(user_id)],
            # The followees' set always holds "~": following nobody is known too.
            args=[
                self.ttl,
                self.size + MARKERS,
                1 if more else 0,
                len(followees),
                *followees,
                *recent_ids,
            ],
        )
        return bool(finished)

    async def add(self, user_ids: Iterable[str], post_ids: Sequence[str]) -> int:
        """Adds posts to the timelines of ``user_ids`` that exist; how many did."""
        keys = [timeline_key(u) for u in user_ids]
        if not keys or not post_ids:
            return 0
        args = [self.size + MARKERS, *post_ids]
        written = await run_script(
            self.redis,
            self._add_if_exists,
            [([keys[i] for i in group], args) for group in slot_groups(self.redis, keys)],
        )
        return sum(int(w) for w in written)

    async def remove(self, user_ids: Iterable[str], post_ids: Sequence[str]) -> None:
        if not post_ids:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.zrem(timeline_key(user_id), *post_ids)
            await pipe.execute()

    async def forget(self, user_id: str) -> None:
        """Drops a user's timeline: the next read rebuilds it from the sources."""
        await self.redis.delete(timeline_key(user_id), following_key(user_id))

    async def mark_celebrity(self, author_id: str, *, on: bool) -> None:
        await (self.redis.sadd if on else self.redis.srem)(CELEBRITIES, author_id)

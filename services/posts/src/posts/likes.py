"""Which posts a reader likes, for ``liked_by_me``: a set per user in Redis.

Postgres holds the likes; Redis holds, per user who reads, the ids of the
posts they like, so a page asks one ``SMISMEMBER`` instead of a query. A set
is loaded from Postgres when first needed, guarded like a timeline rebuild:
the marker ``~b`` goes in first, so a like committed during the load lands
in the set too, and ``~r`` says the set is complete. Writers add or remove
only in sets that exist; an unlike during a load drops the set (the load
might have read the like and would put it back), and a load finishes only
if its set is still there. A user with more likes than ``MAX_LOADED`` gets the
newest ones and the marker ``~p`` (partial): pages of theirs ask Postgres
about the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import redis.asyncio as aioredis

BUILDING = "~b"
READY = "~r"
PARTIAL = "~p"
MAX_LOADED = 10_000
# A loaded set lives this long, however busy: an update lost to a Redis
# failure shows no longer than that.
TTL_SECONDS = 3600

_CHANGE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[1] == '1' then
    redis.call('SADD', KEYS[1], ARGV[2])
  elseif redis.call('SISMEMBER', KEYS[1], '~r') == 1 then
    redis.call('SREM', KEYS[1], ARGV[2])
  else
    redis.call('DEL', KEYS[1])
  end
end
return 0
"""

# KEYS: the set. ARGV: ttl, then what goes in (the ids and markers).
_FINISH_LOAD = """
if redis.call('SISMEMBER', KEYS[1], '~b') == 0 then
  return 0
end
for i = 2, #ARGV do
  redis.call('SADD', KEYS[1], ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Loads the newest MAX_LOADED liked post ids of a user (and whether there are more).
Loader = Callable[[str, int], Awaitable[tuple[list[str], bool]]]


def liked_key(user_id: str) -> str:
    # The user id is the hash tag: a home timeline's page reads this set in
    # the script that reads the timeline (posts.timelines), in one slot.
    return f"liked:{{{user_id}}}"


class LikedSets:
    # The markers a lookup asks about before the ids.
    markers = (READY, PARTIAL)

    def __init__(self, redis_client: aioredis.Redis, ttl_seconds: int = TTL_SECONDS) -> None:
        self.redis = redis_client
        self.ttl = ttl_seconds
        self._change_if_exists = redis_client.register_script(_CHANGE_IF_EXISTS)
        self._finish_load = redis_client.register_script(_FINISH_LOAD)

    async def set(self, user_id: str, post_id: str, *, liked: bool) -> None:
        """After a like or unlike committed, or found already so (which
        repairs a set whose update was lost)."""
        await self._change_if_exists(
            keys=[liked_key(user_id)], args=["1" if liked else "0", post_id]
        )

    async def load(self, user_id: str, load: Loader) -> None:
        key = liked_key(user_id)
        # With a lifetime from the start: a load that dies leaves no
        # marker behind for ever.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sadd(key, BUILDING)
            pipe.expire(key, self.ttl)
            await pipe.execute()
        ids, more = await load(user_id, MAX_LOADED)
        await self._finish_load(
            keys=[key], args=[self.ttl, READY, *ids, *([PARTIAL] if more else [])]
        )

    @staticmethod
    def read(reply: Sequence[int], ids: Sequence[str]) -> LikedAnswer:
        """Reads the reply of ``SMISMEMBER key ~r ~p *ids``."""
        ready, partial = bool(reply[0]), bool(reply[1])
        flags = reply[2:]
        return LikedAnswer(
            ready=ready,
            liked={i for i, yes in zip(ids, flags, strict=True) if yes},
            unsure=[i for i, yes in zip(ids, flags, strict=True) if not yes] if partial else [],
        )

    async def lookup(self, user_id: str, ids: Sequence[str]) -> LikedAnswer:
        reply = await self.redis.smismember(liked_key(user_id), [*self.markers, *ids])
        return self.read(reply, ids)


class LikedAnswer:
    """Which of a page's posts the reader likes, as far as the set knows."""

    __slots__ = ("liked", "ready", "unsure")

    def __init__(self, ready: bool, liked: set[str], unsure: list[str]) -> None:
        self.ready = ready
        self.liked = liked
        # Ids the (partial) set cannot answer for: ask Postgres.
        self.unsure = unsure

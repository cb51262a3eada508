"""The open WebSockets of each user across every realtime process, kept in Redis.

Each connection holds a lease: a member (the connection's id) of the user's
sorted set ``rt:conns:<user id>``, scored with the lease's expiry in unix
seconds. A connection is let in when fewer than ``limit`` leases of the user
are unexpired; the check, the sweep of expired leases and the new lease are
one Lua call, so two processes cannot both take the last place. A process
renews the leases of its live connections every third of a lease and
removes a connection's lease when it closes; the leases of a process that
died without removing them expire on their own within a lease.

Expiries are on Redis' clock (``TIME`` in the scripts), not each process's:
processes with skewed clocks would otherwise sweep each other's live leases
as expired, or keep dead ones too long. A script may write after ``TIME``
since scripts are replicated by their effects (the default from Redis 5 on,
the only way from Redis 7 on).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import redis.asyncio as aioredis
from social_common.logging import get_logger
from social_common.redis import UNAVAILABLE as REDIS_UNAVAILABLE
from social_common.redis import run_script
from social_common.tasks import every

log = get_logger(__name__)

# How long a lease lasts unrenewed: how long a dead process's connections
# still count.
LEASE_SECONDS = 60
# Leases are renewed this often: a lease survives a failed round.
RENEW_SECONDS = LEASE_SECONDS / 3

# KEYS[1]: the user's set; ARGV: the limit, the lease (seconds), the new member.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS[1]: the user's set; ARGV: the lease (seconds), then the members to renew.
# XX: a lease released (or swept) meanwhile is not brought back.
_RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""


def presence_key(user_id: str) -> str:
    """The sorted set of a user's connection leases."""
    return f"rt:conns:{user_id}"


class Presence:
    """Connection leases of this process's users, against a fleet-wide limit."""

    def __init__(self, redis_client: aioredis.Redis, limit: int) -> None:
        self.redis = redis_client
        self.limit = limit
        # This process's live leases per user: what renewal re-scores.
        self.leases: dict[str, set[str]] = {}
        self._acquire = redis_client.register_script(_ACQUIRE)
        self._renew = redis_client.register_script(_RENEW)

    async def acquire(self, user_id: str) -> str | None:
        """A new lease for a connection of ``user_id``, or None when the user
        already holds ``limit`` connections across the fleet. Raises Redis'
        errors (the caller decides what a connection without a count gets)."""
        lease = uuid.uuid4().hex
        granted: Any = await self._acquire(
            keys=[presence_key(user_id)], args=[self.limit, LEASE_SECONDS, lease]
        )
        if not granted:
            return None
        self.leases.setdefault(user_id, set()).add(lease)
        return lease

    async def release(self, user_id: str, lease: str) -> None:
        """Ends a lease; if Redis cannot be told, the lease lapses on its own."""
        held = self.leases.get(user_id)
        if held is not None:
            held.discard(lease)
            if not held:
                del self.leases[user_id]
        with contextlib.suppress(*REDIS_UNAVAILABLE):
            await self.redis.zrem(presence_key(user_id), lease)

    async def renew(self) -> None:
        """Pushes the expiry of every live lease of this process a lease ahead
        (one script call per user, sent together)."""
        live = [(user_id, list(held)) for user_id, held in self.leases.items()]
        if not live:
            return
        await run_script(
            self.redis,
            self._renew,
            [([presence_key(user_id)], [LEASE_SECONDS, *leases]) for user_id, leases in live],
        )

    async def run(self) -> None:
        """Renews the leases until cancelled (a background task). A failed
        round is logged: the next one still comes before a lease lapses."""
        await every(
            RENEW_SECONDS,
            self.renew,
            what="presence_renewal",
            failures=REDIS_UNAVAILABLE,
        )

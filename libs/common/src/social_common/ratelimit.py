"""Rate limits shared by every pod of every service, kept in Redis.

GCRA (the generic cell rate algorithm): each bucket is a single number, its
"theoretical arrival time" (TAT). A request of cost ``c`` is allowed when
``TAT + c * interval - burst <= now``, and then moves TAT forward by
``c * interval``. One Lua script checks and consumes all the limits of a
request at once, on Redis' own clock, so pods with skewed clocks still agree
and concurrent requests cannot both take the last slot.

    limiter = RateLimiter(resources.redis)
    result = await limiter.hit(
        Limit("login_account", account, Rate.parse("5/min")),
        Limit("login_ip", client_ip, Rate.parse("20/min")),
    )
    raise_if_limited(result)
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from social_common.errors import Problem
from social_common.redis import run_script, slot_groups

_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
# "<limit>/<amount><unit>", where either the amount or the unit may be left out
_RATE = re.compile(r"(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)?")

# Times are whole microseconds: Lua numbers are doubles, exact for integers up
# to 2**53, so µs since the epoch (~2**51) and all the sums below stay exact.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local replies, tats, allowed = {}, {}, ARGV[2] == '1'
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i + 1])
  local burst = interval * tonumber(ARGV[2 * i + 2])
  -- a missing or stale TAT means a full bucket
  local tat = math.max(tonumber(redis.call('GET', key) or now), now)
  local new_tat = tat + cost * interval
  local allow_at = new_tat - burst
  if allow_at <= now then
    tats[i] = new_tat
    replies[#replies + 1] = 1
    replies[#replies + 1] = math.floor((now + burst - new_tat) / interval)
    replies[#replies + 1] = new_tat - now
    replies[#replies + 1] = 0
  else
    allowed = false
    replies[#replies + 1] = 0
    replies[#replies + 1] = math.floor((now + burst - tat) / interval)
    replies[#replies + 1] = tat - now
    replies[#replies + 1] = allow_at - now
  end
end
-- all or nothing: a denial by one limit must not spend the others' budgets
-- (nor does a look, ARGV[2] = 0)
if allowed then
  for i, key in ipairs(KEYS) do
    -- the key lives exactly until its bucket is full again, when it means nothing
    local ttl_ms = math.ceil((tats[i] - now) / 1000)
    redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', ttl_ms)
  end
end
return replies
"""


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``period`` seconds; ``limit`` is also the burst."""

    limit: int
    period: float

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"rate limit must be at least 1, not {self.limit}")
        if not self.period > 0:
            raise ValueError(f"rate period must be positive, not {self.period}")

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Reads "5/60" (seconds), "5/min", "20/minute", "5/30min", "10/s", "100/hour"."""
        match = _RATE.fullmatch(text.strip().lower())
        if not match or not (match[2] or match[3]) or (match[3] and match[3] not in _UNITS):
            raise ValueError(
                f"invalid rate {text!r}: expected '<count>/<period>', "
                "such as '5/60', '5/min' or '100/hour'"
            )
        amount = float(match[2]) if match[2] else 1.0
        return cls(int(match[1]), amount * _UNITS[match[3] or "s"])

    @property
    def interval_us(self) -> int:
        """Microseconds one request takes to replenish, at least 1."""
        return max(1, round(self.period * 1_000_000 / self.limit))


@dataclass(frozen=True)
class Limit:
    """One budget: ``name`` says what is limited, ``key`` for whom (any string)."""

    name: str
    key: str
    rate: Rate


@dataclass(frozen=True)
class RateLimitResult:
    """The outcome of a hit, for the most restrictive of the limits checked."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the bucket is fully replenished
    retry_after: float  # seconds until one more request would be allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers, plus Retry-After when denied."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_after)),
        }
        if not self.allowed:
            # rounded up, at least 1: a client retrying sooner would only be denied again
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class RateLimiter:
    """Checks and consumes limits atomically in Redis (GCRA, one Lua script)."""

    def __init__(self, redis: aioredis.Redis, prefix: str = "rl") -> None:
        self._prefix = prefix
        self._redis = redis
        # EVALSHA, loading the script again when Redis does not know it (restart, failover)
        self._script = redis.register_script(_GCRA)

    def _redis_key(self, limit: Limit) -> str:
        # hashed: the key is user input (account names, IPs) of any length and content
        digest = hashlib.blake2b(limit.key.encode(), digest_size=16).hexdigest()
        return f"{self._prefix}:{limit.name}:{digest}"

    async def hit(self, *limits: Limit, cost: int = 1) -> RateLimitResult:
        """Spends ``cost`` from every limit if all allow it, from none otherwise.

        Returns the most restrictive result: a denial (the one to wait for the
        longest) over any allowance, else the allowance with the fewest remaining.
        """
        if not limits:
            raise ValueError("hit needs at least one limit")
        if not 1 <= cost <= min(limit.rate.limit for limit in limits):
            # a cost above a limit could never be allowed: a bug, not a rate-limited client
            raise ValueError(f"cost {cost} must be between 1 and every limit")
        keys = [self._redis_key(limit) for limit in limits]
        if len(set(keys)) != len(keys):
            raise ValueError("the same limit (name and key) is given twice")
        # Limits whose keys share a slot are checked and spent in one call. On
        # a cluster, where they may not, all are looked at first and spent
        # only if all allow: a denial by one spends none of the others
        # (unless another request spends one in between).
        groups = slot_groups(self._redis, keys)
        if len(groups) > 1:
            results = await self._run(limits, keys, groups, cost, spend=False)
            if not all(r.allowed for r in results):
                return _most_restrictive(results)
        return _most_restrictive(await self._run(limits, keys, groups, cost, spend=True))

    async def _run(
        self,
        limits: Sequence[Limit],
        keys: Sequence[str],
        groups: Sequence[Sequence[int]],
        cost: int,
        *,
        spend: bool,
    ) -> list[RateLimitResult]:
        calls = [
            (
                [keys[i] for i in group],
                [
                    cost,
                    1 if spend else 0,
                    *(n for i in group for n in (limits[i].rate.interval_us, limits[i].rate.limit)),
                ],
            )
            for group in groups
        ]
        replies = await run_script(self._redis, self._script, calls)
        results: list[RateLimitResult | None] = [None] * len(limits)
        for group, reply in zip(groups, replies, strict=True):
            for j, i in enumerate(group):
                results[i] = RateLimitResult(
                    allowed=bool(reply[4 * j]),
                    limit=limits[i].rate.limit,
                    # below 0 only if the rate was lowered since the bucket filled up
                    remaining=max(0, int(reply[4 * j + 1])),
                    reset_after=reply[4 * j + 2] / 1_000_000,
                    retry_after=reply[4 * j + 3] / 1_000_000,
                )
        return [r for r in results if r is not None]


def _most_restrictive(results: Sequence[RateLimitResult]) -> RateLimitResult:
    """A denial (the one to wait for the longest) over any allowance, else the
    allowance with the fewest remaining."""
    return min(results, key=lambda r: (r.allowed, -r.retry_after, r.remaining))


def raise_if_limited(result: RateLimitResult) -> None:
    """Raises a 429 problem, with the rate limit headers, when ``result`` is a denial."""
    if not result.allowed:
        raise Problem(
            429,
            "rate_limited",
            f"Too many requests; retry in {result.headers()['Retry-After']} seconds.",
            headers=result.headers(),
        )

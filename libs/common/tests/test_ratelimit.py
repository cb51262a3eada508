"""Rate limits in the stack's real Redis: bursts, concurrency, atomicity, replenishing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from social_common.errors import Problem
from social_common.ratelimit import (
    Limit,
    Rate,
    RateLimiter,
    RateLimitResult,
    raise_if_limited,
)
from social_common.redis import create_redis
from social_stack.local import Endpoints

T = TypeVar("T")


def _run(stack: Endpoints, scenario: Callable[[RateLimiter], Awaitable[T]]) -> T:
    """Runs ``scenario`` with a limiter on a fresh client (clients belong to one event loop)."""

    async def main() -> T:
        client = create_redis(stack.redis_url)
        try:
            return await scenario(RateLimiter(client))
        finally:
            await client.aclose()

    return asyncio.run(main())


def _limit(rate: Rate, name: str = "test") -> Limit:
    """A limit on a key no other test (or earlier run) uses."""
    return Limit(name, uuid.uuid4().hex, rate)


def test_a_burst_of_limit_is_allowed_then_the_next_is_denied(stack: Endpoints) -> None:
    limit = _limit(Rate(5, 60))

    async def scenario(limiter: RateLimiter) -> list[RateLimitResult]:
        return [await limiter.hit(limit) for _ in range(6)]

    *burst, denied = _run(stack, scenario)
    assert [r.allowed for r in burst] == [True] * 5
    assert not denied.allowed
    assert denied.remaining == 0
    assert 11.5 < denied.retry_after <= 12.0  # period / limit, less the time the test took
    assert denied.headers() == {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "60",
        "Retry-After": "12",
    }


def test_remaining_counts_down_and_reset_is_when_the_bucket_is_full(stack: Endpoints) -> None:
    limit = _limit(Rate(3, 30))

    async def scenario(limiter: RateLimiter) -> list[RateLimitResult]:
        return [await limiter.hit(limit) for _ in range(3)]

    results = _run(stack, scenario)
    assert [r.remaining for r in results] == [2, 1, 0]
    assert [r.retry_after for r in results] == [0, 0, 0]
    # each request takes 10 s to replenish
    assert [r.headers()["X-RateLimit-Reset"] for r in results] == ["10", "20", "30"]
    assert all("Retry-After" not in r.headers() for r in results)


def test_concurrent_hits_allow_exactly_the_limit(stack: Endpoints) -> None:
    limit = _limit(Rate(10, 60))

    async def scenario(limiter: RateLimiter) -> list[RateLimitResult]:
        return await asyncio.gather(*(limiter.hit(limit) for _ in range(50)))

    results = _run(stack, scenario)
    assert sum(r.allowed for r in results) == 10


def test_a_denial_by_one_limit_consumes_none_of_the_others(stack: Endpoints) -> None:
    account = _limit(Rate(3, 60), "login_account")
    ip = _limit(Rate(1, 60), "login_ip")

    async def scenario(limiter: RateLimiter) -> tuple[RateLimitResult, ...]:
        await limiter.hit(ip)  # spends the IP's whole budget
        denied = [await limiter.hit(account, ip) for _ in range(5)]
        return (*denied, await limiter.hit(account))

    *denied, account_alone = _run(stack, scenario)
    assert not any(r.allowed for r in denied)
    assert {r.limit for r in denied} == {1}  # the result is the denying limit's
    assert account_alone.allowed
    assert account_alone.remaining == 2  # the five denied logins took nothing


def test_when_all_allow_each_is_consumed_and_the_tightest_is_reported(stack: Endpoints) -> None:
    wide = _limit(Rate(10, 60))
    tight = _limit(Rate(3, 60))

    async def scenario(limiter: RateLimiter) -> tuple[RateLimitResult, ...]:
        return await limiter.hit(wide, tight), await limiter.hit(wide), await limiter.hit(tight)

    both, wide_alone, tight_alone = _run(stack, scenario)
    assert (both.allowed, both.limit, both.remaining) == (True, 3, 2)
    assert wide_alone.remaining == 8
    assert tight_alone.remaining == 1


def test_the_budget_replenishes_once_retry_after_has_passed(stack: Endpoints) -> None:
    limit = _limit(Rate(2, 0.2))

    async def scenario(limiter: RateLimiter) -> tuple[RateLimitResult, RateLimitResult]:
        for _ in range(2):
            await limiter.hit(limit)
        denied = await limiter.hit(limit)
        await asyncio.sleep(denied.retry_after)  # waiting for time itself
        return denied, await limiter.hit(limit)

    denied, again = _run(stack, scenario)
    assert not denied.allowed
    assert 0 < denied.retry_after <= 0.1
    assert again.allowed
    assert again.remaining == 0  # one slot came back, and it was just taken


def test_keys_are_hashed_bounded_and_expire(stack: Endpoints) -> None:
    name = f"hostile_{uuid.uuid4().hex}"
    hostile = Limit(name, "ünïcode:*?\n" + "x" * 10_000, Rate(5, 60))

    async def scenario(limiter: RateLimiter) -> list[tuple[bytes, int]]:
        await limiter.hit(hostile)
        client = create_redis(stack.redis_url)
        try:
            return [(k, await client.pttl(k)) async for k in client.scan_iter(f"rl:{name}:*")]
        finally:
            await client.aclose()

    [(key, pttl)] = _run(stack, scenario)
    assert len(key) < len(name) + 40
    assert 0 < pttl <= 12_000  # one request replenishes in 12 s, then the key is gone


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("5/60", Rate(5, 60)),
        ("5/min", Rate(5, 60)),
        ("20/minute", Rate(20, 60)),
        ("5/30min", Rate(5, 1800)),
        ("10/s", Rate(10, 1)),
        ("100/hour", Rate(100, 3600)),
        (" 3 / 1.5 s ", Rate(3, 1.5)),
        ("1/Day", Rate(1, 86400)),
    ],
)
def test_rate_parse_accepts_the_usual_forms(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate


@pytest.mark.parametrize(
    "text",
    ["", "5", "5/", "/min", "abc", "0/min", "-1/s", "5/0", "1.5/s", "5/fortnight", "5/min/s"],
)
def test_rate_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        Rate.parse(text)


def test_raise_if_limited_raises_a_429_problem_with_retry_after(stack: Endpoints) -> None:
    limit = _limit(Rate(1, 60))

    async def scenario(limiter: RateLimiter) -> tuple[RateLimitResult, RateLimitResult]:
        return await limiter.hit(limit), await limiter.hit(limit)

    allowed, denied = _run(stack, scenario)
    raise_if_limited(allowed)  # no error
    with pytest.raises(Problem) as caught:
        raise_if_limited(denied)
    assert caught.value.status == 429
    assert caught.value.code == "rate_limited"
    assert caught.value.headers["Retry-After"] == "60"
    assert caught.value.headers["X-RateLimit-Remaining"] == "0"


def test_retry_after_header_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    def retry_header(seconds: float) -> str:
        return RateLimitResult(False, 5, 0, seconds, seconds).headers()["Retry-After"]

    assert [retry_header(s) for s in (0.0, 0.01, 1.0, 1.2)] == ["1", "1", "1", "2"]

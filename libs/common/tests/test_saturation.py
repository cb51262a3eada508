"""Saturation metrics: the pools counted at scrape time, the event loop's lateness."""

from __future__ import annotations

import asyncio
import contextlib
import time

import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from social_common.db import create_pool
from social_common.redis import create_redis
from social_common.saturation import POOLS, sample_event_loop_lag
from social_stack.local import Endpoints


def _value(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_the_pools_are_counted_as_they_are_when_scraped(stack: Endpoints) -> None:
    async def main() -> None:
        # Both connections opened up front: a pool that grows counts the one
        # it is opening as in use, and when that lands is up to the server.
        pool = create_pool(stack.database_urls["posts"], min_size=2, max_size=2, name="sat-test")
        await pool.open(wait=True)
        redis_client: aioredis.Redis = create_redis(stack.redis_url)
        POOLS.watch(pool, redis_client)
        try:
            await redis_client.ping()
            assert _value("db_pool_max_connections") == 2
            assert _value("redis_pool_max_connections") == 256
            assert _value("redis_pool_connections", state="in_use") == 0
            assert _value("redis_pool_connections", state="idle") == 1
            async with pool.connection(), pool.connection():
                assert _value("db_pool_connections", state="in_use") == 2
                assert _value("db_pool_requests_waiting") == 0
            assert _value("db_pool_connections", state="in_use") == 0
        finally:
            POOLS.watch(None, redis_client)
            await pool.close()
            await redis_client.aclose()

    asyncio.run(main())


def test_a_blocked_event_loop_shows_as_lag() -> None:
    def lag_count() -> float:
        return _value("event_loop_lag_seconds_bucket", le="+Inf") or 0.0

    def lag_over_100ms() -> float:
        return lag_count() - (_value("event_loop_lag_seconds_bucket", le="0.1") or 0.0)

    async def main() -> None:
        before, slow_before = lag_count(), lag_over_100ms()
        sampler = asyncio.create_task(sample_event_loop_lag(interval=0.01))
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # noqa: ASYNC251  # the point: the loop is blocked
        await asyncio.sleep(0.05)
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        assert lag_count() > before + 2
        assert lag_over_100ms() == slow_before + 1

    asyncio.run(main())

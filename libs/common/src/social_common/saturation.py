"""Saturation metrics: how full a process's pools are, and how late its event
loop runs (the USE side of the RED metrics in social_common.metrics).

The pools are read when Prometheus scrapes (a collector over their own
counts: nothing is paid per request); the event loop's lateness is sampled by
a background task (``sample_event_loop_lag``) that the runner starts.

  db_pool_connections{state="in_use"|"idle"}, db_pool_max_connections,
                                 (in use: taken, or being opened)
  db_pool_requests_waiting       the PostgreSQL pool (psycopg_pool)
  redis_pool_connections{state}, redis_pool_max_connections
                                 the Redis client's pool
  event_loop_lag_seconds         how late the loop wakes from a timer
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import redis.asyncio as aioredis
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import AsyncConnectionPool

from social_common.redis import pool_usage
from social_common.tasks import cancel_requested

EVENT_LOOP_LAG = Histogram(
    "event_loop_lag_seconds",
    "How late the event loop woke from a timer (time it spent on other work)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
# Four samples a second: a loop blocked for longer than this shows in them.
LAG_SAMPLE_SECONDS = 0.25


async def sample_event_loop_lag(interval: float = LAG_SAMPLE_SECONDS) -> None:
    """Observes, until cancelled, how much later than asked the loop wakes."""
    loop = asyncio.get_running_loop()
    while not cancel_requested():
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        EVENT_LOOP_LAG.observe(max(0.0, loop.time() - asked))


class PoolCollector(Collector):
    """The process's pools, counted at scrape time (one per process: the
    runner's; ``watch`` points it at them)."""

    def __init__(self) -> None:
        self.db: AsyncConnectionPool | None = None
        self.redis: aioredis.Redis | None = None

    def watch(self, db: AsyncConnectionPool | None, redis_client: aioredis.Redis) -> None:
        self.db, self.redis = db, redis_client

    def collect(self) -> Iterable[Metric]:
        if self.db is not None:
            stats = self.db.get_stats()
            idle = stats.get("pool_available", 0)
            yield _by_state(
                "db_pool_connections",
                "PostgreSQL connections of the pool",
                stats.get("pool_size", 0) - idle,
                idle,
            )
            yield GaugeMetricFamily(
                "db_pool_max_connections", "The PostgreSQL pool's size limit", self.db.max_size
            )
            yield GaugeMetricFamily(
                "db_pool_requests_waiting",
                "Requests waiting for a PostgreSQL connection",
                stats.get("requests_waiting", 0),
            )
        if self.redis is not None:
            in_use, idle, most = pool_usage(self.redis)
            yield _by_state("redis_pool_connections", "Redis connections of the pool", in_use, idle)
            yield GaugeMetricFamily(
                "redis_pool_max_connections", "The Redis pool's size limit", most
            )


def _by_state(name: str, documentation: str, in_use: int, idle: int) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["state"])
    family.add_metric(["in_use"], in_use)
    family.add_metric(["idle"], idle)
    return family


POOLS = PoolCollector()
REGISTRY.register(POOLS)

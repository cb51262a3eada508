"""`make bench-redis`'s table: a cluster's primaries told from its replicas
by the store counters, each primary's commands and the busiest's share."""

from __future__ import annotations

from typing import Any

from tools.bench.observe import PRIMARY_COMMANDS
from tools.bench.redis_compare import primaries, redis_cpu_ms, table


def _row(cpu: dict[str, float], stores: dict[str, float]) -> dict[str, Any]:
    return {
        "scenario": "home_timeline",
        "generator": "wrk",
        "requests_per_s": 1000.0,
        "ratio_to_ceiling": 0.025,
        "p95_ms": 90.0,
        "cpu": {name: {"ms_per_request": ms} for name, ms in cpu.items()},
        "stores": {name: {"per_request": n / 1000, "per_s": n} for name, n in stores.items()},
    }


SINGLE = _row({"redis": 0.08, "posts": 0.6}, {"redis_commands": 6000})
CLUSTER = _row(
    {"redis": 0.04, "redis-2": 0.03, "redis-3": 0.03, "redis-4": 0.01, "posts": 0.7},
    {
        "redis_commands": 9000,
        f"{PRIMARY_COMMANDS}redis": 4500,
        f"{PRIMARY_COMMANDS}redis-2": 2250,
        f"{PRIMARY_COMMANDS}redis-3": 2250,
    },
)


def test_the_primaries_are_those_the_counters_name_the_rest_replicas() -> None:
    assert primaries(SINGLE) == {}
    assert primaries(CLUSTER) == {"redis": 4500, "redis-2": 2250, "redis-3": 2250}
    assert redis_cpu_ms(SINGLE) == (0.08, 0.0)
    primary_ms, replica_ms = redis_cpu_ms(CLUSTER)
    assert (round(primary_ms, 3), replica_ms) == (0.1, 0.01)


def test_the_table_puts_each_scenario_on_both_side_by_side() -> None:
    lines = table({"results": [SINGLE]}, {"results": [CLUSTER]}).splitlines()
    one, cluster = lines[2:]
    assert one.startswith("| home_timeline (wrk), one Redis | 1,000 (0.03) | 90 | 6.0 | 0.080 |")
    assert cluster.startswith("| home_timeline (wrk), cluster | 1,000 (0.03) | 90 | 9.0 |")
    assert "0.100 + 0.010" in cluster
    assert "4,500 / 2,250 / 2,250 (busiest 50%)" in cluster

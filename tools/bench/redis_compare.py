"""One Redis beside a Redis Cluster (``make bench-redis``): the same
scenarios run by ``make bench`` on a stack with one Redis, then on one with
a three-primary cluster, printed side by side from the two results files.

For each scenario: requests a second and their ratio to the run's ceiling,
p95, Redis commands per request, Redis's CPU per request (every node's: on
the cluster the primaries and, apart, their replicas), and each primary's
commands a second with the busiest's share, which says how evenly the keys
spread (the capacity model's shard count assumes they do).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .model import GENERATOR_NAMES
from .observe import PRIMARY_COMMANDS

REDIS_COMPONENT = "redis"


def _rows(results: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(row["scenario"], row["generator"]): row for row in results["results"]}


def primaries(row: Mapping[str, Any]) -> dict[str, float]:
    """Each cluster primary's commands a second in a row (empty for one server)."""
    return {
        name.removeprefix(PRIMARY_COMMANDS): work["per_s"]
        for name, work in row.get("stores", {}).items()
        if name.startswith(PRIMARY_COMMANDS)
    }


def redis_cpu_ms(row: Mapping[str, Any]) -> tuple[float, float]:
    """Redis's CPU per request: its primaries' (every node of one server),
    and its replicas'."""
    cpu = row.get("cpu", {})
    nodes = {
        name: spent["ms_per_request"]
        for name, spent in cpu.items()
        if name == REDIS_COMPONENT or name.startswith(f"{REDIS_COMPONENT}-")
    }
    serving = set(primaries(row)) or set(nodes)
    return (
        sum(ms for name, ms in nodes.items() if name in serving),
        sum(ms for name, ms in nodes.items() if name not in serving),
    )


def _cells(row: Mapping[str, Any] | None) -> list[str]:
    if row is None:
        return ["—"] * 5
    shards = primaries(row)
    primary_ms, replica_ms = redis_cpu_ms(row)
    stores = row.get("stores", {})
    commands = stores.get("redis_commands", {}).get("per_request")
    spread = (
        " / ".join(f"{per_s:,.0f}" for per_s in shards.values())
        + f" (busiest {max(shards.values()) / sum(shards.values()):.0%})"
        if shards and sum(shards.values())
        else ""
    )
    return [
        f"{row['requests_per_s']:,.0f} ({row['ratio_to_ceiling']:.2f})",
        f"{row['p95_ms']:,.0f}",
        "" if commands is None else f"{commands:.1f}",
        f"{primary_ms:.3f}" + (f" + {replica_ms:.3f}" if replica_ms else ""),
        spread,
    ]


def table(single: Mapping[str, Any], cluster: Mapping[str, Any]) -> str:
    one, many = _rows(single), _rows(cluster)
    lines = [
        "| scenario | req/s (ratio to ceiling) | p95 ms | Redis commands/request"
        " | Redis CPU ms/request (primaries + replicas) | each primary's commands/s |",
        "|---|---|---|---|---|---|",
    ]
    for key in [*one, *(k for k in many if k not in one)]:
        scenario, generator = key
        if generator not in GENERATOR_NAMES:
            continue
        for label, rows in (("one Redis", one), ("cluster", many)):
            cells = " | ".join(_cells(rows.get(key)))
            lines.append(f"| {scenario} ({generator}), {label} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("single", type=Path, help="results of the run on one Redis")
    parser.add_argument("cluster", type=Path, help="results of the run on the cluster")
    args = parser.parse_args()
    print(table(json.loads(args.single.read_text()), json.loads(args.cluster.read_text())))


if __name__ == "__main__":
    main()

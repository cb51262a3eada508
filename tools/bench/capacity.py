"""The capacity model (``make capacity``): from a `make bench` results file,
what the seed's 1,000,000 requests a minute (16,667/s) and ten times that
take in production, written to docs/capacity.md; the figures it used are
kept beside it (docs/capacity.json), so the document can be checked against
them (tests/test_capacity.py) and rendered again when the chart changes.

For two mixes (DeathStarBench's, measured as one scenario, and a read-heavy
one composed of measured scenarios, READ_HEAVY), each component's CPU per
request (the results' ``cpu``, read from /proc around each run) times the
target rate gives the cores it needs. A service or the gateway needs those
cores in pods of the chart's CPU request at the HPA's target utilization
(values-production.yaml), against the roster's (or the gateway's) maximum
pods. PostgreSQL and Redis get their cores and operations a second (the
results' ``stores``); a Redis primary is one thread, so its cores over
REDIS_PRIMARY_CORES is the shards needed; PostgreSQL's connections are the
database services' pods times their pool.

On a Redis Cluster (figures from `make bench-redis`'s two runs, ``--cluster``:
one Redis, then the local three-primary cluster): the primaries' CPU per
request of the DeathStarBench mix there (a cluster splits many-key commands per slot, so it
may cost more than one server), times the rate, over REDIS_PRIMARY_CORES,
times how unevenly the keys spread (the busiest primary's share of the
commands times the primaries: 1 when even), is the primaries needed.

Last, for each of issue 18's goals (the bench's scenarios with a goal, and
the live delivery's messages a second): the fleet's CPU per request times
the goal's rate, the cores that goal takes (goal_costs).

The figures are what this 2-core machine spent at saturation, every
component sharing the cores with the others and with the load generator: an
upper bound per request, on a CPU that may differ from production's.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from social_common.fleet import roster
from social_stack.chart import CHART, chart_values, deep_merge
from social_stack.paths import REPO_ROOT

from .model import GENERATOR_NAMES, RESULTS_DIR
from .redis_compare import REDIS_COMPONENT, primaries, redis_cpu_ms

DOCUMENT = REPO_ROOT / "docs" / "capacity.md"
FIGURES = REPO_ROOT / "docs" / "capacity.json"
TARGETS = (16_667, 166_667)
# A read-heavy day: half anonymous feed reads (cached whole pages), the rest
# signed-in timelines, one request in twenty a post.
READ_HEAVY = {"global_feed": 0.5, "home_timeline": 0.3, "user_timeline": 0.15, "create_post": 0.05}
DSB_MIX = "dsb_mix"
# A Redis primary runs commands on one thread: plan each for this much of a core.
REDIS_PRIMARY_CORES = 0.8
# The realtime row with CPU figures (per message posted).
WS_LATENCY = "ws_latency"
# What the gateway's processes are called in the results (the stack's Envoy).
GATEWAY = "envoy"
STORES = ("postgres", "redis")


@dataclass(frozen=True)
class Sizing:
    """A deployment's pods: CPU requested by each, the HPA's target, the most."""

    cpu_request: float
    target_utilization: float
    max_pods: int
    min_pods: int
    pool: int  # PostgreSQL connections per pod (0: no database)


@dataclass(frozen=True)
class Profile:
    """What one request of a mix costs on average: CPU milliseconds by
    component, and store operations (the results' ``stores`` names)."""

    name: str
    cpu_ms: dict[str, float]
    stores: dict[str, float]


def cores(quantity: str | float) -> float:
    """A Kubernetes CPU quantity ("500m", "2", 1.5) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def chart_sizing(chart: Path = CHART) -> dict[str, Sizing]:
    """The production sizing of every service and of the gateway (by the
    results' name, envoy), from the chart's values and the roster."""
    values = chart_values("values-production.yaml", chart)
    fleet = roster()
    sizing = {}
    for name, service in fleet.services.items():
        merged = deep_merge(values["serviceDefaults"], values.get(name) or {})
        sizing[name] = Sizing(
            cpu_request=cores(merged["resources"]["requests"]["cpu"]),
            target_utilization=merged["autoscaling"]["targetCPUUtilizationPercentage"] / 100,
            max_pods=merged["autoscaling"].get("maxReplicas") or service.max_replicas,
            min_pods=merged["autoscaling"].get("minReplicas") or service.min_replicas,
            pool=merged["databasePool"]["max"] if service.database else 0,
        )
    gateway = values["gateway"]
    sizing[GATEWAY] = Sizing(
        cpu_request=cores(gateway["resources"]["requests"]["cpu"]),
        target_utilization=gateway["autoscaling"]["targetCPUUtilizationPercentage"] / 100,
        max_pods=gateway["autoscaling"]["maxReplicas"],
        min_pods=gateway["autoscaling"]["minReplicas"],
        pool=0,
    )
    return sizing


def _row(results: Mapping[str, Any], scenario: str) -> Mapping[str, Any]:
    for row in results["results"]:
        if row["scenario"] == scenario and row.get("cpu"):
            found: Mapping[str, Any] = row
            return found
    raise ValueError(f"the results have no {scenario} row with CPU figures: run `make bench`")


def _profile_of(name: str, rows: Mapping[str, float], results: Mapping[str, Any]) -> Profile:
    """The weighted average request of ``rows`` (scenario: weight)."""
    cpu: dict[str, float] = {}
    stores: dict[str, float] = {}
    for scenario, weight in rows.items():
        row = _row(results, scenario)
        for component, spent in row["cpu"].items():
            if component not in GENERATOR_NAMES:
                cpu[component] = cpu.get(component, 0.0) + weight * spent["ms_per_request"]
        for store, done in row.get("stores", {}).items():
            stores[store] = stores.get(store, 0.0) + weight * done["per_request"]
    return Profile(name, cpu, stores)


def profiles(results: Mapping[str, Any]) -> list[Profile]:
    return [
        _profile_of("DeathStarBench mix (60% home, 30% user, 10% post)", {DSB_MIX: 1.0}, results),
        _profile_of(
            "read-heavy ("
            + ", ".join(f"{weight:.0%} {name}" for name, weight in READ_HEAVY.items())
            + ")",
            READ_HEAVY,
            results,
        ),
    ]


@dataclass(frozen=True)
class Need:
    component: str
    cores: float
    pods: int | None  # None for the stores
    max_pods: int | None

    @property
    def fits(self) -> bool:
        return self.pods is None or self.pods <= (self.max_pods or 0)


def needs(profile: Profile, rate: float, sizing: Mapping[str, Sizing]) -> list[Need]:
    """Cores and pods each component needs for ``rate`` requests a second."""
    found = []
    for component in [*sizing, *STORES]:
        needed = rate * profile.cpu_ms.get(component, 0.0) / 1000
        size = sizing.get(component)
        if size is None:
            found.append(Need(component, needed, None, None))
            continue
        pods = max(size.min_pods, math.ceil(needed / (size.cpu_request * size.target_utilization)))
        found.append(Need(component, needed, pods, size.max_pods))
    return found


def redis_shards(redis_cores: float) -> int:
    return max(1, math.ceil(redis_cores / REDIS_PRIMARY_CORES))


def cluster_shards(primary_cores: float, imbalance: float) -> int:
    """Primaries for ``primary_cores`` of commands when the busiest gets
    ``imbalance`` times its even share: it sets the pace."""
    return redis_shards(primary_cores * imbalance)


def cluster_figures(
    single: Mapping[str, Any], cluster: Mapping[str, Any], sources: tuple[str, str]
) -> dict[str, Any]:
    """What the model reads of `make bench-redis`'s two runs (``single`` on
    one Redis, ``cluster`` on a Redis Cluster): for the DSB mix on each, the
    requests a second, Redis's CPU per request (the cluster's primaries and
    replicas apart) and commands per request; the cluster's commands a second
    on each primary."""
    one, many = _row(single, DSB_MIX), _row(cluster, DSB_MIX)
    shards = primaries(many)
    if primaries(one) or not shards:
        raise ValueError(f"{sources[0]} is not of one Redis or {sources[1]} not of a cluster")
    primary_ms, replica_ms = redis_cpu_ms(many)

    def services_ms(row: Mapping[str, Any]) -> float:
        """The fleet's CPU per request but Redis's and the load generator's."""
        return sum(
            float(spent["ms_per_request"])
            for name, spent in row["cpu"].items()
            if name not in GENERATOR_NAMES and name.partition("-")[0] != REDIS_COMPONENT
        )

    return {
        "sources": list(sources),
        "scenario": DSB_MIX,
        "single": {
            "requests_per_s": one["requests_per_s"],
            "redis_ms": redis_cpu_ms(one)[0],
            "services_ms": services_ms(one),
            "commands_per_request": one["stores"]["redis_commands"]["per_request"],
        },
        "services_ms": services_ms(many),
        "requests_per_s": many["requests_per_s"],
        "primary_ms": primary_ms,
        "replica_ms": replica_ms,
        "commands_per_request": many["stores"]["redis_commands"]["per_request"],
        "primary_commands_per_s": shards,
    }


def render_cluster(cluster: Mapping[str, Any]) -> list[str]:
    """The Redis Cluster section: the primaries each target takes."""
    shards: dict[str, float] = cluster["primary_commands_per_s"]
    busiest = max(shards.values()) / sum(shards.values())
    imbalance = busiest * len(shards)
    single = cluster["single"]
    single_source, cluster_source = cluster["sources"]
    lines = [
        "",
        "## On a Redis Cluster",
        "",
        f"From `make bench-redis`: the DeathStarBench mix on one Redis (`{single_source}`,"
        f" {single['requests_per_s']:,.0f} requests/s) and then on the local cluster of"
        f" {len(shards)} primaries with a replica each (`{cluster_source}`,"
        f" {cluster['requests_per_s']:,.0f} requests/s). The cluster's primaries spent"
        f" {cluster['primary_ms']:.3f} ms of CPU per request (the one server"
        f" {single['redis_ms']:.3f} ms) and its replicas {cluster['replica_ms']:.3f} ms, on"
        f" {cluster['commands_per_request']:.1f} commands per request (the one server"
        f" {single['commands_per_request']:.1f}): a many-key command or script is one per"
        " slot there (a post's fan-out, one per follower). The busiest primary took"
        f" {busiest:.0%} of the commands (even: {1 / len(shards):.0%}), so primaries are"
        f" planned at {imbalance:.2f} times their even share. The rest of the fleet spent"
        f" {cluster['services_ms']:.3f} ms per request there (with one Redis"
        f" {single['services_ms']:.3f} ms; posts took the most of the difference): the"
        " pods above grow by as much on a cluster.",
        "",
        "| requests/s | primaries' cores | primaries (a replica each) |",
        "|---|---|---|",
    ]
    for rate in TARGETS:
        needed = rate * cluster["primary_ms"] / 1000
        lines.append(f"| {rate:,} | {needed:.1f} | {cluster_shards(needed, imbalance)} |")
    return lines


def database_connections(found: list[Need], sizing: Mapping[str, Sizing]) -> int:
    return sum(
        (need.pods or 0) * sizing[need.component].pool
        for need in found
        if need.component in sizing and sizing[need.component].pool
    )


def figures(results: Mapping[str, Any], source: str) -> dict[str, Any]:
    """What the model reads of a results file: its machine, each row's rate,
    CPU, store work and goal, and the live delivery's CPU per message."""
    kept = ("scenario", "generator", "requests_per_s", "cpu", "stores", "goal")
    return {
        "source": source,
        "machine": {"nproc": results["machine"]["nproc"]},
        "results": [
            {key: row[key] for key in kept if key in row}
            for row in results["results"]
            if "cpu" in row and "stores" in row
        ],
        "realtime": [
            {
                "scenario": row["scenario"],
                "messages_per_s": row["messages_per_s"],
                "target_messages_per_s": row["target_messages_per_s"],
                "cpu": row["cpu"],
            }
            for row in results.get("realtime", [])
            if row["scenario"] == WS_LATENCY and row.get("cpu")
        ],
    }


@dataclass(frozen=True)
class GoalCost:
    """What one of issue 18's goals takes: the fleet's CPU per request (the
    load generator's left out) times the goal's rate."""

    scenario: str
    ms_per_request: float
    goal_per_s: float
    measured_per_s: float

    @property
    def cores(self) -> float:
        return self.goal_per_s * self.ms_per_request / 1000

    def at_most(self, cores: float) -> float:
        """The rate ``cores`` could give at this cost, were nothing else running."""
        return cores * 1000 / self.ms_per_request if self.ms_per_request else 0.0


def goal_costs(results: Mapping[str, Any]) -> list[GoalCost]:
    """Each scenario with a goal (its rate as scaled for the run's ceiling),
    and the live delivery at the rate it asked for."""

    def fleet_ms(cpu: Mapping[str, Mapping[str, float]]) -> float:
        return sum(s["ms_per_request"] for c, s in cpu.items() if c not in GENERATOR_NAMES)

    found = [
        GoalCost(
            row["scenario"],
            fleet_ms(row["cpu"]),
            row["goal"]["requests_per_s"],
            row["requests_per_s"],
        )
        for row in results["results"]
        if row.get("goal", {}).get("requests_per_s")
    ]
    found += [
        GoalCost(
            row["scenario"],
            fleet_ms(row["cpu"]),
            row["target_messages_per_s"],
            row["messages_per_s"],
        )
        for row in results.get("realtime", [])
    ]
    return found


def render(results: Mapping[str, Any], sizing: Mapping[str, Sizing]) -> str:
    """The document, from ``figures()`` of a results file."""
    source = results["source"]
    ceiling = _row(results, "ceiling")["requests_per_s"]
    lines = [
        "# Capacity model",
        "",
        f"Generated by `make capacity` from `{source}` (a `make bench` run on"
        f" {results['machine']['nproc']} cores; its wrk ceiling {ceiling:,.0f} requests/s)"
        " and the chart's production values: edit those, or run the bench again,"
        " not this file. tools/bench/capacity.py says how it is computed; the"
        " figures per request are what this machine spent at saturation, every"
        " component sharing its cores, so an upper bound.",
    ]
    targets = {size.target_utilization for size in sizing.values()}
    target = f"{next(iter(targets)):.0%}" if len(targets) == 1 else "its HPA's"
    for profile in profiles(results):
        lines += ["", f"## {profile.name}", ""]
        lines.append(
            "Per request: "
            + ", ".join(
                f"{component} {ms:.3f} ms"
                for component, ms in sorted(profile.cpu_ms.items(), key=lambda i: -i[1])
                if ms >= 0.001
            )
            + "; "
            + ", ".join(f"{name.replace('_', ' ')} {n:.2f}" for name, n in profile.stores.items())
            + "."
        )
        for rate in TARGETS:
            found = needs(profile, rate, sizing)
            redis = next(n for n in found if n.component == "redis")
            lines += [
                "",
                f"### {rate:,} requests/s",
                "",
                f"| component | cores | pods (CPU request, {target} target) | most pods | fits |",
                "|---|---|---|---|---|",
            ]
            for need in found:
                pods = "" if need.pods is None else f"{need.pods}"
                most = "" if need.max_pods is None else f"{need.max_pods}"
                fits = "" if need.pods is None else ("yes" if need.fits else "**no**")
                lines.append(f"| {need.component} | {need.cores:.1f} | {pods} | {most} | {fits} |")
            operations = ", ".join(
                f"{name.replace('_', ' ')} {rate * n:,.0f}/s" for name, n in profile.stores.items()
            )
            short = [n.component for n in found if not n.fits]
            lines += [
                "",
                f"- Stores: {operations}.",
                f"- Redis: {redis.cores:.1f} cores of commands, so {redis_shards(redis.cores)}"
                f" primaries at {REDIS_PRIMARY_CORES} of a core each"
                + (" (one server holds)." if redis_shards(redis.cores) == 1 else " (a cluster)."),
                f"- PostgreSQL: {database_connections(found, sizing):,} connections"
                " (database services' pods x pool).",
                "- The HPA bounds: "
                + (
                    "enough."
                    if not short
                    else f"**not enough** for {', '.join(short)}: raise the maximum or make"
                    " requests cheaper (issue 18)."
                ),
            ]
    if "cluster" in results:
        lines += render_cluster(results["cluster"])
    nproc = results["machine"]["nproc"]
    lines += [
        "",
        "## What issue 18's goals take",
        "",
        "Each scenario with a goal in `make bench` (its rate scaled by this run's"
        " ceiling; for `ws_latency`, messages a second): the fleet's CPU per request,"
        " the load generator's left out, times the goal's rate. The last column is"
        f" what {nproc} cores give at that cost when nothing else runs on them (here the"
        " load generator takes its share).",
        "",
        f"| scenario | fleet CPU per request | goal per s | cores it takes | at most on {nproc}"
        " cores | measured per s |",
        "|---|---|---|---|---|---|",
    ]
    for cost in goal_costs(results):
        lines.append(
            f"| {cost.scenario} | {cost.ms_per_request:.3f} ms | {cost.goal_per_s:,.0f}"
            f" | {cost.cores:.1f} | {cost.at_most(nproc):,.0f} | {cost.measured_per_s:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def newest_results() -> Path:
    found = sorted(RESULTS_DIR.glob("bench-2*.json"))
    if not found:
        raise SystemExit("capacity: no results/bench-*.json: run `make bench` first")
    return found[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("results", nargs="?", type=Path, help="default: the newest results file")
    source.add_argument(
        "--again", action="store_true", help=f"from the figures kept in {FIGURES.name}"
    )
    parser.add_argument(
        "--cluster",
        type=Path,
        nargs=2,
        metavar=("SINGLE", "CLUSTER"),
        help="make bench-redis's two results files, on one Redis and on a Redis Cluster;"
        f" default: the figures kept in {FIGURES.name}, if any",
    )
    args = parser.parse_args()
    previous = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    if args.results is None and args.again:
        kept = previous
    else:
        path: Path = args.results or newest_results()
        kept = figures(json.loads(path.read_text()), path.name)
    if args.cluster is not None:
        single, cluster = args.cluster
        kept["cluster"] = cluster_figures(
            json.loads(single.read_text()),
            json.loads(cluster.read_text()),
            (single.name, cluster.name),
        )
    elif "cluster" in previous:
        kept["cluster"] = previous["cluster"]
    FIGURES.write_text(json.dumps(kept, indent=1) + "\n")
    DOCUMENT.write_text(render(kept, chart_sizing()))
    print(DOCUMENT)


if __name__ == "__main__":
    main()

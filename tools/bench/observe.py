"""What measure.py looks at inside the posts service while it loads it:
its cache counters (Prometheus ``cache_requests_total{cache,layer,outcome}``
on its /metrics), whether it has finished the work events left it (fan-out,
timelines), and where its time goes (py-spy, with BENCH_PROFILE=1); what
the realtime scenarios read of a process: its resident memory and
open-files limit (/proc); and around each measured run, the CPU time every
component of the stack spends, process tree and all (/proc), and the work
Redis and PostgreSQL do (commands, transactions, rows).

Processes and metrics addresses come from the state file of the stack
`make up` started (.run/stack.json, see social_stack.local).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from social_common.redis import primaries_info
from social_stack import health
from social_stack.local import Endpoints, load_state
from social_stack.paths import DEFAULT_RUN_DIR, binary
from social_stack.processes import Component, StackError, is_running, stat_fields

# Events are done when no more are handled for this long.
SETTLE_QUIET_S = 1.0
SETTLE_MAX_S = 120.0
PROFILE_RATE_HZ = 100
PROFILE_TOP = 12
# A Redis Cluster primary's commands in the store counters: this, then its component's name.
PRIMARY_COMMANDS = "redis_commands_of_"


@dataclass(frozen=True)
class ServiceProcess:
    """A running service of the dev stack."""

    pid: int
    # host:port of its HTTP server.
    address: str

    @property
    def metrics_url(self) -> str:
        return f"http://{self.address}/metrics"


def _stack(run_dir: Path) -> tuple[Endpoints, list[Component]] | None:
    """The stack `make up` started (endpoints, components); None if there is none."""
    try:
        return load_state(run_dir)
    except StackError:
        return None


def _running(name: str, run_dir: Path) -> tuple[Endpoints, list[Component], Component] | None:
    """The stack `make up` started (endpoints, components) and its running
    component ``name``; None if there is no such stack or component."""
    loaded = _stack(run_dir)
    if loaded is None:
        return None
    endpoints, components = loaded
    component = next((c for c in components if c.name == name), None)
    if component is None or not is_running(component):
        return None
    return endpoints, components, component


def find_service(name: str, run_dir: Path = DEFAULT_RUN_DIR) -> ServiceProcess | None:
    """The service ``name`` that `make up` started, or None (another stack,
    or none, or several replicas: their /metrics share one port, so a scrape
    reads whichever process the kernel picks and the counts mean nothing)."""
    found = _running(name, run_dir)
    if found is None:
        return None
    endpoints, components, component = found
    address = endpoints.services_http.get(name)
    if address is None:
        return None
    if any(c.name.startswith(f"{name}-") for c in components):
        print(f"bench: {name} runs as replicas: its process is not observed", file=sys.stderr)
        return None
    return ServiceProcess(component.pid, address)


def find_pid(name: str, run_dir: Path = DEFAULT_RUN_DIR) -> int | None:
    """The process id of the stack's component ``name`` (e.g. envoy), if running."""
    found = _running(name, run_dir)
    return found[2].pid if found is not None else None


def resident_bytes(pid: int) -> int:
    """The process's resident memory now (VmRSS)."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_resident_bytes(pid: int) -> int:
    """The most resident memory the process has had (VmHWM)."""
    return _status_kib(pid, "VmHWM") * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/{pid}/status")


def open_files_limit(pid: int) -> int:
    """The process's soft limit on open descriptors."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft = line.split()[3]
            return 1 << 62 if soft == "unlimited" else int(soft)
    raise ValueError(f"no open files limit in /proc/{pid}/limits")


# /proc/<pid>/stat counts CPU time in clock ticks.
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, tuple[int, float]]:
    """Every process's parent and CPU seconds: its own user and system time
    and that of the children it has reaped (an exited PostgreSQL backend's
    time is then its postmaster's)."""
    found = {}
    for entry in Path("/proc").iterdir():
        fields = stat_fields(int(entry.name)) if entry.name.isdigit() else None
        if fields is None:  # not a process, or gone meanwhile
            continue
        ticks = sum(int(v) for v in fields[11:15])
        found[int(entry.name)] = (int(fields[1]), ticks / _TICKS_PER_S)
    return found


def _trees(roots: Mapping[str, int], stats: dict[int, tuple[int, float]]) -> dict[str, list[int]]:
    """The processes of each running root (name -> pid): it and all its
    descendants (PostgreSQL's backends, media's workers)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in stats.items():
        children.setdefault(parent, []).append(pid)
    trees = {}
    for name, root in roots.items():
        if root not in stats:
            continue
        tree, pending = [], [root]
        while pending:
            pid = pending.pop()
            tree.append(pid)
            pending.extend(children.get(pid, ()))
        trees[name] = tree
    return trees


def _roots(run_dir: Path) -> dict[str, int]:
    """The running components of the stack `make up` started (name -> pid)."""
    loaded = _stack(run_dir)
    components = loaded[1] if loaded is not None else []
    return {c.name: c.pid for c in components if is_running(c)}


def _tree_usage(roots: Mapping[str, int], memory: bool) -> dict[str, tuple[float, int]]:
    """Each root's process tree's CPU seconds so far and, if asked, its
    memory now (PSS; 0 if not asked: reading it costs the kernel a walk)."""
    stats = _proc_stats()
    return {
        name: (
            sum(stats[pid][1] for pid in tree),
            sum(_pss_bytes(pid) for pid in tree) if memory else 0,
        )
        for name, tree in _trees(roots, stats).items()
    }


def cpu_seconds(run_dir: Path = DEFAULT_RUN_DIR) -> dict[str, float]:
    """CPU seconds used so far by each running component of the stack `make
    up` started, with all its descendants; empty when there is no such stack."""
    return {name: cpu for name, (cpu, _) in _tree_usage(_roots(run_dir), memory=False).items()}


def _pss_bytes(pid: int) -> int:
    """The process's proportional share of memory: pages it shares (PostgreSQL's
    shared buffers) count once over all the processes that map them."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:  # gone meanwhile
        pass
    return 0


def usage(
    run_dir: Path = DEFAULT_RUN_DIR, others: Mapping[str, int] | None = None
) -> dict[str, tuple[float, int]]:
    """Each running component's CPU seconds so far and memory now (the PSS
    of its process tree), for the stack `make up` started, and as much for
    ``others`` (name -> pid: a load generator)."""
    return _tree_usage({**_roots(run_dir), **(others or {})}, memory=True)


def store_counters(run_dir: Path = DEFAULT_RUN_DIR) -> dict[str, int]:
    """Work Redis and PostgreSQL have done so far for the stack `make up`
    started: Redis commands processed (and each primary's, on a cluster),
    PostgreSQL transactions and rows read and written in the stack's database
    (cumulative statistics, which PostgreSQL's backends flush within a second
    or so of their work, so a run's last moments may count in the next).
    Empty when there is no stack."""
    loaded = _stack(run_dir)
    if loaded is None:
        return {}
    endpoints, components = loaded
    # Each primary's commands, by its component's name (a cluster's, in the
    # order of the slots they serve), and their sum.
    names = {component.probe.address: component.name for component in components}
    primaries = {
        names.get(address, address): int(info["total_commands_processed"])
        for address, info in primaries_info(endpoints.redis_url, "stats").items()
    }
    with psycopg.connect(endpoints.database_admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched,"
            " tup_inserted + tup_updated + tup_deleted"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return {
        "redis_commands": sum(primaries.values()),
        **(
            {f"{PRIMARY_COMMANDS}{name}": count for name, count in primaries.items()}
            if len(primaries) > 1
            else {}
        ),
        "postgres_transactions": int(row[0]),
        "postgres_rows_read": int(row[1]),
        "postgres_rows_written": int(row[2]),
    }


def store_work(
    before: dict[str, int], after: dict[str, int], requests: int, duration_s: float
) -> dict[str, dict[str, float]]:
    """Each store counter over a run: per request, and per second."""
    return {
        name: {
            "per_request": round((after[name] - before[name]) / requests, 3) if requests else 0.0,
            "per_s": round((after[name] - before[name]) / duration_s, 1) if duration_s else 0.0,
        }
        for name in after
        if name in before
    }


def format_store_work(work: dict[str, dict[str, float]]) -> str:
    return ", ".join(
        f"{name.replace('_', ' ')} {row['per_request']:g}/request ({row['per_s']:,.0f}/s)"
        for name, row in work.items()
    )


def generator_cpu_seconds() -> float:
    """CPU seconds used so far by this process's finished children: the load
    generators (wrk, k6) once each run has ended."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def cpu_per_request(
    before: dict[str, float], after: dict[str, float], requests: int, duration_s: float
) -> dict[str, dict[str, float]]:
    """What each component spent on a run: CPU milliseconds per request and
    cores busy on average, for those that spent any."""
    spent = {
        name: after[name] - before[name]
        for name in after
        if name in before and after[name] > before[name]
    }
    return {
        name: {
            "ms_per_request": round(seconds * 1000 / requests, 4) if requests else 0.0,
            "cores": round(seconds / duration_s, 3) if duration_s else 0.0,
        }
        for name, seconds in sorted(spent.items(), key=lambda item: -item[1])
    }


def format_cpu(cpu: dict[str, dict[str, float]]) -> str:
    """Those that kept at least a hundredth of a core busy (the results file has all)."""
    return ", ".join(
        f"{name} {row['ms_per_request']:.3f} ms ({row['cores']:.2f} cores)"
        for name, row in cpu.items()
        if row["cores"] >= 0.01
    )


def scrape(metrics_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the service's /metrics (read as `make health-check`
    reads them), by name and labels."""
    try:
        # A service just out of a saturating run may answer slowly.
        samples = health.scrape(metrics_url, timeout=10.0)
    except httpx.HTTPError as exc:
        print(f"bench: cannot read {metrics_url}: {exc}", file=sys.stderr)
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value) for s in samples}


def _sum(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def cache_ratios(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[str, dict[str, Any]]:
    """Per cache and layer, during the interval: the share of the layer's
    lookups that hit (None without lookups) and the lookups. A layer is
    looked up when the one in front of it missed: "l1" (in-process) then
    "l2" (Redis) for the two-layer caches; "response" for whole responses."""
    counts: dict[str, dict[str, Counter[str]]] = {}
    for (name, labels), value in after.items():
        if name != "cache_requests_total":
            continue
        label = dict(labels)
        delta = int(value - before.get((name, labels), 0.0))
        layers = counts.setdefault(label["cache"], {})
        layers.setdefault(label["layer"], Counter())[label["outcome"]] += delta
    ratios: dict[str, dict[str, Any]] = {}
    for cache, layers in sorted(counts.items()):
        row: dict[str, Any] = {}
        for layer, outcome in sorted(layers.items()):
            lookups = outcome["hit"] + outcome["miss"]
            row[f"{layer}_lookups"] = lookups
            row[f"{layer}_hit_ratio"] = round(outcome["hit"] / lookups, 4) if lookups else None
        ratios[cache] = row
    return ratios


def format_ratios(ratios: dict[str, dict[str, Any]]) -> str:
    """One line: per cache, each layer's hit ratio and lookups."""

    def layer(name: str, row: dict[str, Any]) -> str:
        ratio = row[f"{name}_hit_ratio"]
        hits = "-" if ratio is None else f"{ratio:.1%}"
        return f"{name} {hits} of {row[f'{name}_lookups']}"

    return "; ".join(
        f"{cache}: "
        + ", ".join(
            layer(key.removesuffix("_lookups"), row) for key in row if key.endswith("_lookups")
        )
        for cache, row in ratios.items()
    )


def wait_settled(metrics_url: str) -> float:
    """Wait until the service handles no more events (the fan-out and
    timeline work the previous load or preparation left it); the seconds waited."""
    started = time.monotonic()
    last = _sum(scrape(metrics_url), "events_handled_total")
    quiet_since = time.monotonic()
    while time.monotonic() - started < SETTLE_MAX_S:
        time.sleep(0.25)
        handled = _sum(scrape(metrics_url), "events_handled_total")
        if handled != last:
            last, quiet_since = handled, time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE_QUIET_S:
            break
    else:
        print(f"bench: posts still handling events after {SETTLE_MAX_S:.0f}s", file=sys.stderr)
    return time.monotonic() - started


class Profile:
    """``py-spy record`` of a process for a measured run: raw collapsed
    stacks (one ``frame;frame;... count`` line each, as flamegraph.pl and
    speedscope read them) without line numbers. py-spy pauses the process
    for each sample (PROFILE_RATE_HZ a second) and takes CPU on the same
    box: a profiled run's numbers are lower than an unprofiled one's."""

    def __init__(self, pid: int, duration_s: int, output: Path) -> None:
        self.output = output
        output.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary("py-spy"),
                "record",
                f"--pid={pid}",
                f"--duration={duration_s}",
                f"--rate={PROFILE_RATE_HZ}",
                "--format=raw",
                "--nolineno",
                f"--output={output}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def finish(self, timeout_s: float = 60.0) -> dict[str, Any] | None:
        """Wait for py-spy; the file and the top functions by own time, or None."""
        try:
            stdout, stderr = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
        if self.process.returncode != 0 or not self.output.is_file():
            print(
                f"bench: py-spy failed (rc={self.process.returncode}): "
                f"{(stderr or stdout).strip()[-500:]}",
                file=sys.stderr,
            )
            return None
        samples, top = top_functions(self.output)
        return {"file": str(self.output), "samples": samples, "top_self": top}


def top_functions(path: Path, count: int = PROFILE_TOP) -> tuple[int, list[dict[str, Any]]]:
    """From collapsed stacks: the samples, and the functions most often on
    top of the stack (own time), each with its share of the samples."""
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        total += int(number)
        own[stack.rsplit(";", 1)[-1]] += int(number)
    top = [
        {"function": function, "samples": n, "share": round(n / total, 4)}
        for function, n in own.most_common(count)
    ]
    return total, top


def replies(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[str, int]:
    """The service's replies during the interval, by "METHOD route status"
    (http_requests_total): which route answered what, errors included."""
    counts: dict[str, int] = {}
    for (name, labels), value in sorted(after.items()):
        if name != "http_requests_total":
            continue
        label = dict(labels)
        if label.get("route") in ("/readyz", "/healthz", "/metrics"):
            continue
        delta = int(value - before.get((name, labels), 0.0))
        if delta:
            counts[f"{label['method']} {label['route']} {label['status']}"] = delta
    return counts

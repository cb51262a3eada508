"""What tracing costs: the bench twice, on a stack without tracing and on one
with it at the chart's default sampling, side by side (``make bench-tracing``).

Each half starts the stack fresh (``make up``: the documented ports and
``.run/``), runs ``python -m tools.bench`` on a few scenarios (the anonymous
read path, the DeathStarBench mix, a timeline, posting) and stops it again;
the traced half sends the gateway's and the services' spans to an OTLP
receiver in this process, which counts them. Each half is judged against its
own Envoy ceiling, so the ratios compare across the two.

Settings: ``BENCH_TRACING_RATIO`` (the sampling ratio, default the chart's
0.01) and ``BENCH_TRACING_SCENARIOS``; the other BENCH_* settings pass
through to both halves. Results: ``results/bench-tracing-<time>.json`` and a
table on stdout.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import yaml
from social_stack.otlp import Receiver
from social_stack.paths import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "results"
CHART_VALUES = REPO_ROOT / "deploy" / "helm" / "social" / "values.yaml"
SCENARIOS = "global_feed,dsb_mix,home_timeline,create_post"
STACK = [sys.executable, "-m", "social_stack"]


def default_ratio() -> float:
    """The chart's sampling ratio: what a production install traces."""
    values: dict[str, Any] = yaml.safe_load(CHART_VALUES.read_text())
    return float(values["tracing"]["sampleRatio"])


def run_half(tracing: Mapping[str, str]) -> dict[str, Any]:
    """Starts the stack with ``tracing`` in its environment, benches it,
    stops it; the bench's results."""
    env = {**os.environ, **tracing}
    env.setdefault("BENCH_SCENARIOS", os.environ.get("BENCH_TRACING_SCENARIOS", SCENARIOS))
    before = set(RESULTS_DIR.glob("bench-2*.json"))
    subprocess.run([*STACK, "up"], env=env, check=True)
    try:
        subprocess.run([sys.executable, "-m", "tools.bench"], env=env, check=True, cwd=REPO_ROOT)
    finally:
        subprocess.run([*STACK, "down"], env=env, check=True)
    (written,) = set(RESULTS_DIR.glob("bench-2*.json")) - before
    results: dict[str, Any] = json.loads(written.read_text())
    return results


def rows_of(results: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["generator"], r["scenario"]): r for r in results["results"]}


def main() -> int:
    if subprocess.run([*STACK, "status"], capture_output=True, check=False).returncode == 0:
        print("bench-tracing: a stack is up: stop it (make down); this starts its own")
        return 1
    ratio = float(os.environ.get("BENCH_TRACING_RATIO") or default_ratio())
    started = dt.datetime.now(dt.UTC)
    off = run_half({})
    with Receiver(keep=False) as receiver:
        on = run_half(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": str(ratio),
            }
        )
        spans = dict(receiver.counts)
    table = compare(off, on)
    out = RESULTS_DIR / f"bench-tracing-{started:%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        json.dumps(
            {"sample_ratio": ratio, "spans": spans, "rows": table, "off": off, "on": on}, indent=2
        )
        + "\n"
    )
    print(f"\ntracing off vs on (sampling ratio {ratio}); ratios to each half's own ceiling")
    print(
        f"{'generator':9} {'scenario':14} {'off req/s':>10} {'ratio':>6} {'p95 ms':>8}"
        f" {'on req/s':>10} {'ratio':>6} {'p95 ms':>8} {'on/off':>7}"
    )
    for row in table:
        cells = [
            f"{row[f'{half}_requests_per_s']:10.0f} {row[f'{half}_ratio_to_ceiling']:6.2f}"
            f" {row[f'{half}_p95_ms']:8.1f}"
            for half in ("off", "on")
        ]
        change = row["on_requests_per_s"] / row["off_requests_per_s"]
        print(f"{row['generator']:9} {row['scenario']:14} {' '.join(cells)} {change:7.2f}")
    print(f"spans received while traced: {spans}")
    print(f"results: {out}")
    return 0


def compare(off: Mapping[str, Any], on: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (generator, scenario) measured in both halves."""
    on_rows = rows_of(on)
    table = []
    for key, before in rows_of(off).items():
        after = on_rows.get(key)
        if after is None or not before["requests_per_s"] or not after["requests_per_s"]:
            continue
        table.append(
            {
                "generator": key[0],
                "scenario": key[1],
                **{
                    f"{half}_{field}": row[field]
                    for half, row in (("off", before), ("on", after))
                    for field in ("requests_per_s", "ratio_to_ceiling", "p95_ms", "error_rate")
                },
            }
        )
    return table


if __name__ == "__main__":
    sys.exit(main())

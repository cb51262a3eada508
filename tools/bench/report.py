"""The report of a run: the results file (``results/bench-<UTC
timestamp>.json`` at the repo root: settings, machine, preparation, cleanup
and a row per measurement) and what is printed on stdout (a table, notes on
what it does not show, the realtime scenarios' lines).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from social_stack.paths import REPO_ROOT

from . import generators, observe, web_bench, ws_bench
from .model import RESULTS_DIR, Goal, Settings


def machine_info(used: tuple[str, ...]) -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if "wrk" in used:
        info["wrk"] = generators.tool_version([generators.find_wrk(), "-v"])
    if "k6" in used:
        info["k6"] = generators.tool_version([generators.find_k6(), "version"])
    return info


def format_notes(rows: list[dict[str, Any]]) -> str:
    """What the table does not show: goals, cache hit ratios, CPU per
    request by component, profiles."""
    lines: list[str] = []
    for row in rows:
        label = f"{row['scenario']} ({row['generator']})"
        if "goal" in row:
            found = row["goal"]
            goal = Goal(
                found["requests_per_s"],
                found["p95_ms"],
                found["error_rate_below"],
                found.get("at_ceiling"),
            )
            missed = ", ".join(found["missed"])
            verdict = "met" if found["met"] else f"NOT met: {missed}"
            lines.append(f"goal {label}: {goal}: {verdict}")
        if "cache" in row:
            lines.append(f"cache {label}: {observe.format_ratios(row['cache'])}")
        if row.get("cpu"):
            lines.append(f"cpu {label}: {observe.format_cpu(row['cpu'])}")
        if row.get("stores"):
            lines.append(f"stores {label}: {observe.format_store_work(row['stores'])}")
        if "requests_by_kind" in row:
            kinds = ", ".join(f"{k} {v}" for k, v in row["requests_by_kind"].items())
            lines.append(f"mix {label}: {kinds}")
        if "profile" in row:
            profile = row["profile"]
            lines.append(f"profile {label}: {profile['file']} ({profile['samples']} samples)")
            lines += [
                f"  {entry['share']:6.1%}  {entry['function']}" for entry in profile["top_self"]
            ]
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    header = (
        "scenario",
        "generator",
        "conns",
        "requests/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "ratio",
        "goal",
    )
    cells = [header] + [
        (
            row["scenario"],
            row["generator"],
            str(row["connections"]),
            # Uploads do a few a second: a decimal tells 2.6 from 3.4.
            f"{row['requests_per_s']:.1f}"
            if row["requests_per_s"] < 100
            else f"{row['requests_per_s']:.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p95_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['error_rate']:.2%}",
            f"{row['ratio_to_ceiling']:.2f}",
            ("met" if row["goal"]["met"] else "missed") if "goal" in row else "",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned.
    return "\n".join(
        "  ".join(
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(line)
        ).rstrip()
        for line in cells
    )


def write_results(
    started: dt.datetime,
    settings: Settings,
    machine: dict[str, Any],
    preparation: Mapping[str, Any],
    cleaned: dict[str, int],
    rows: list[dict[str, Any]],
    realtime_rows: list[dict[str, Any]],
    web_rows: list[dict[str, Any]],
) -> Path:
    """Write the results file of the run ``started``; its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "machine": machine,
        "preparation": dict(preparation),
        "cleanup": cleaned,
        "results": rows,
        "realtime": realtime_rows,
        "web": web_rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    return out


def print_report(
    rows: list[dict[str, Any]],
    realtime_rows: list[dict[str, Any]],
    web_rows: list[dict[str, Any]],
    out: Path,
) -> None:
    """The table, the notes, the realtime and web lines on stdout, then where the file is."""
    if rows:
        print(format_table(rows))
    if notes := format_notes(rows):
        print(f"\n{notes}")
    if realtime_rows:
        print("\n" + "\n".join(ws_bench.describe(row) for row in realtime_rows))
    if web_rows:
        print("\n" + "\n".join(web_bench.describe(row) for row in web_rows))
    print(f"\nresults: {out.relative_to(REPO_ROOT)}")

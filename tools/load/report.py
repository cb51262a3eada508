"""A load test's report: report.md (the verdict table first), report.json
(everything it says, for tools; run.py keeps the stack's samples beside it in
stack-samples.json), and PNG plots over the run, with the faults marked:

  requests.png   requests/s, errors/s and VUs
  latency.png    p50, p95 and p99 of each second
  sockets.png    realtime's sockets, and the delivery p95 of each 5 s
  cpu.png        each component's cores, and all of them against the machine's
  memory.png     each component's memory (endurance: with each fitted slope)
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from .chaos import FaultEvent
from .checker import Check
from .points import Points
from .sampler import Sample
from .tests import LoadTest
from .verdicts import Verdict, pct, slope

SIZE = (10, 4.5)
KNEE_REASONS = {"threshold": "a threshold broke", "throughput": "throughput stopped growing"}
DPI = 110


def _mark_faults(axes: Axes, faults: list[FaultEvent], t0: float) -> None:
    for event in faults:
        end = (event.end or event.start + 1) - t0
        axes.axvspan(event.start - t0, end, color="tab:red", alpha=0.15)
        axes.annotate(
            event.kind,
            (event.start - t0, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            fontsize=7,
        )


def _figure(title: str, ylabel: str, faults: list[FaultEvent], t0: float) -> tuple[Any, Axes]:
    figure, axes = plt.subplots(figsize=SIZE)
    axes.set_title(title)
    axes.set_xlabel("seconds into the test")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    # More series than the default ten colours: a component each.
    axes.set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(20)])
    _mark_faults(axes, faults, t0)
    return figure, axes


def _save(figure: Any, axes: Axes, path: Path) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _per_second(points: Points, t0: float, seconds: int) -> dict[str, np.ndarray[Any, Any]]:
    """Requests, errors and p50/p95/p99 of each second (the points are in
    time order, so each second's are one slice)."""
    second = np.floor(points.t - t0).astype(int)
    keep = (second >= 0) & (second < seconds)
    second, ms, failed = second[keep], points.ms[keep], points.failed[keep]
    count = np.bincount(second, minlength=seconds)
    errors = np.bincount(second, weights=failed, minlength=seconds)
    quantiles = np.full((3, seconds), np.nan)
    bounds = np.searchsorted(second, np.arange(seconds + 1))
    for s in range(seconds):
        chunk = ms[bounds[s] : bounds[s + 1]]
        if chunk.size:
            quantiles[:, s] = np.percentile(chunk, [50, 95, 99])
    return {"count": count, "errors": errors, "quantiles": quantiles}


def plot(
    out: Path,
    test: LoadTest,
    points: Points,
    samples: list[Sample],
    faults: list[FaultEvent],
    t0: float,
) -> list[str]:
    """Write the plots into ``out``; their file names."""
    seconds = int(max(points.t[-1] - t0 if points.t.size else 0, test.seconds)) + 1
    x = np.arange(seconds)
    series = _per_second(points, t0, seconds)
    written = []

    figure, axes = _figure(f"{test.name}: requests", "per second", faults, t0)
    axes.plot(x, series["count"], label="requests/s", color="tab:blue")
    axes.plot(x, series["errors"], label="errors/s", color="tab:red")
    vus = axes.twinx()
    vus.plot([t - t0 for t, _ in points.vus], [v for _, v in points.vus], color="tab:gray", ls=":")
    vus.set_ylabel("VUs (dotted)")
    _save(figure, axes, out / "requests.png")
    written.append("requests.png")

    figure, axes = _figure(f"{test.name}: latency of each second", "ms", faults, t0)
    for row, label in enumerate(("p50", "p95", "p99")):
        axes.plot(x, series["quantiles"][row], label=label)
    axes.set_yscale("log")
    _save(figure, axes, out / "latency.png")
    written.append("latency.png")

    figure, axes = _figure(f"{test.name}: sockets and delivery", "sockets", faults, t0)
    axes.plot(
        [s.t - t0 for s in samples if s.sockets is not None],
        [s.sockets for s in samples if s.sockets is not None],
        label="realtime sockets",
        color="tab:green",
    )
    if points.delivery:
        times, ms = np.array(points.delivery).T
        buckets = np.floor((times - t0) / 5).astype(int)
        delivery = axes.twinx()
        centers = [b * 5 + 2.5 for b in np.unique(buckets)]
        p95 = [np.percentile(ms[buckets == b], 95) for b in np.unique(buckets)]
        delivery.plot(centers, p95, color="tab:purple", marker=".", ls="-")
        delivery.set_ylabel("delivery p95 of 5 s, ms (purple)")
    _save(figure, axes, out / "sockets.png")
    written.append("sockets.png")

    names = sorted({n for s in samples for n in s.cpu_s})
    figure, axes = _figure(f"{test.name}: CPU per component", "cores", faults, t0)
    # Everything measured together, against the machine's cores.
    axes.axhline(os.cpu_count() or 1, color="black", lw=0.8, ls=":")
    if len(samples) > 1:
        totals = [
            sum(max(0.0, b.cpu_s[n] - a.cpu_s[n]) for n in b.cpu_s if n in a.cpu_s) / (b.t - a.t)
            for a, b in itertools.pairwise(samples)
        ]
        axes.plot([s.t - t0 for s in samples[1:]], totals, color="black", lw=1.2, label="all")
    for name in names:
        pairs = [(s.t, s.cpu_s[name]) for s in samples if name in s.cpu_s]
        times = np.array([t for t, _ in pairs])
        used = np.array([c for _, c in pairs])
        if times.size > 1:
            # A restarted component's counter starts over: no negative cores.
            cores = np.clip(np.diff(used) / np.diff(times), 0, None)
            axes.plot(times[1:] - t0, cores, label=name)
    _save(figure, axes, out / "cpu.png")
    written.append("cpu.png")

    figure, axes = _figure(f"{test.name}: memory per component (PSS)", "MiB", faults, t0)
    for name in names:
        pairs = [(s.t, s.memory[name] / 2**20) for s in samples if name in s.memory]
        line = axes.plot([t - t0 for t, _ in pairs], [m for _, m in pairs], label=name)
        if test.thresholds.steady and len(pairs) > 2:
            fitted = slope(pairs)
            start_t, start_m = pairs[0]
            ends = [pairs[0][0] - t0, pairs[-1][0] - t0]
            axes.plot(
                ends,
                [start_m, start_m + fitted * (pairs[-1][0] - start_t)],
                ls="--",
                color=line[0].get_color(),
                label=f"{name} {fitted * 3600:+.1f} MiB/h",
            )
    _save(figure, axes, out / "memory.png")
    written.append("memory.png")
    return written


def mean_cores(samples: list[Sample]) -> dict[str, float]:
    """Each component's (and the generator's) cores, on average over the run:
    the sum of its CPU time's rises from sample to sample (a restarted
    component's counter starts over)."""
    if len(samples) < 2:
        return {}
    used: dict[str, float] = {}
    for before, after in itertools.pairwise(samples):
        for name, seconds in after.cpu_s.items():
            if name in before.cpu_s:
                used[name] = used.get(name, 0.0) + max(0.0, seconds - before.cpu_s[name])
    span = samples[-1].t - samples[0].t
    return dict(sorted(((n, s / span) for n, s in used.items()), key=lambda item: -item[1]))


def _table(rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return lines + ["| " + " | ".join(row) + " |" for row in rows[1:]]


def write(
    out: Path,
    test: LoadTest,
    scale: float,
    verdicts: list[Verdict],
    extra: dict[str, Any],
    check: Check,
    faults: list[FaultEvent],
    points: Points,
    plots: list[str],
    samples: list[Sample],
    t0: float,
) -> None:
    passed = all(v.passed for v in verdicts)
    duration = (points.t[-1] - t0) if points.t.size else 0.0
    by_name: dict[str, int] = {}
    for name in points.names:
        by_name[name] = by_name.get(name, 0) + 1
    lines = [
        f"# Load test `{test.name}`: {'PASSED' if passed else 'FAILED'}",
        "",
        f"{test.summary}; scale {scale:g} of the seed's {test.seed_minutes:g} minutes and "
        f"{test.seed_users:,} users: {test.seconds:.0f} s, at most {test.peak_vus:,} VUs "
        "(users and watchers of the user model, tools/load/k6/load.js).",
        "",
        *_table(
            [["threshold", "measured", "verdict"]]
            + [[v.threshold, v.measured, "pass" if v.passed else "**FAIL**"] for v in verdicts]
        ),
        "",
        f"{points.t.size:,} requests in {duration:.0f} s "
        f"({points.t.size / max(duration, 1):,.1f}/s); "
        + ", ".join(
            f"{name} {count:,}" for name, count in sorted(by_name.items(), key=lambda i: -i[1])
        ),
        "",
        "Acknowledged writes: "
        + ", ".join(
            f"{kind} {count:,} ({check.lost[kind]} lost)" for kind, count in check.acked.items()
        )
        + f". Watches {check.watches:,}: {check.received:,} of {check.expected:,} messages "
        f"received, {check.missed} missed; {check.gap_watches} watches told of a gap "
        f"({check.missed_after_gap} messages to refetch).",
    ]
    cores = mean_cores(samples)
    lines += [
        "",
        "CPU, cores on average over the run: "
        + ", ".join(f"{name} {used:.2f}" for name, used in cores.items() if used >= 0.01)
        + f"; {sum(cores.values()):.2f} in all, of {os.cpu_count()}.",
    ]
    if "stress" in extra:
        stress = extra["stress"]
        lines += ["", "Steps:", ""]
        lines += _table(
            [["VUs", "requests/s", "p95 ms", "errors"]]
            + [
                [f"{s['vus']:,}", f"{s['rps']:,.1f}", f"{s['p95_ms']:.1f}", pct(s["error_rate"])]
                for s in stress["steps"]
            ]
        )
        knee = stress["knee"]
        lines += [
            "",
            "No knee within the steps."
            if knee is None
            else f"The knee: {knee['vus']:,} VUs at {knee['rps']:,.1f} requests/s; the next step "
            f"({knee['next']['vus']:,} VUs) brought {knee['next']['rps']:,.1f} requests/s at p95 "
            f"{knee['next']['p95_ms']:.0f} ms ({KNEE_REASONS[knee['why']]}).",
        ]
    if faults:
        lines += ["", "Faults:", ""]
        lines += _table(
            [["fault", "at s", "healthy again after"]]
            + [
                [
                    e.kind,
                    f"{e.start - t0:.0f}",
                    f"{e.end - e.start:.1f} s" if e.end else str(e.error),
                ]
                for e in faults
            ]
        )
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in plots), ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "report.json").write_text(
        json.dumps(
            {
                "test": test.name,
                "scale": scale,
                "passed": passed,
                "verdicts": [v.to_json() for v in verdicts],
                "check": check.to_json(),
                "faults": [vars(e) for e in faults],
                "requests": int(points.t.size),
                "mean_cores": {name: round(used, 3) for name, used in cores.items()},
                "duration_s": round(duration, 1),
                **extra,
            },
            indent=2,
        )
    )

"""A load test's verdicts: each of its thresholds against what was measured,
from k6's raw points (points.py), the stack's samples (sampler.py), the
faults (chaos.py) and the loss check (checker.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .chaos import FaultEvent
from .checker import Check
from .points import Points
from .sampler import GENERATOR, Sample
from .tests import LoadTest

# After a fault, its window goes on this long past the component's recovery.
FAULT_TAIL_S = 5.0
# The spike's recovery is judged on windows of this many seconds.
RECOVERY_WINDOW_S = 5.0
# Endurance: the first third of the hold is warm-up (caches, pools filling);
# growth is judged between the middle and the last third of it.
MEMORY_GROWTH_MAX = 0.05
MEMORY_GROWTH_FLOOR_MIB = 8.0
CONNECTIONS_GROWTH_MAX = 0.10
CONNECTIONS_GROWTH_FLOOR = 2
OUTBOX_MAX = 100.0
CONSUMER_LAG_MAX_S = 5.0


@dataclass(frozen=True)
class Verdict:
    threshold: str
    measured: str
    passed: bool

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "measured": self.measured, "passed": self.passed}


def window(
    points: Points, start: float, end: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Durations and failures of the requests that ended in [start, end) (unix s)."""
    low, high = np.searchsorted(points.t, [start, end])
    return points.ms[low:high], points.failed[low:high]


def error_rate(failed: npt.NDArray[np.bool_]) -> float:
    return float(failed.mean()) if failed.size else 0.0


def percentile(ms: npt.NDArray[np.float64], q: float) -> float:
    return float(np.percentile(ms, q)) if ms.size else 0.0


def pct(rate: float) -> str:
    return f"{rate:.2%}"


def recovery(points: Points, since: float, p95_ms: float) -> float | None:
    """Seconds from ``since`` to the end of the first RECOVERY_WINDOW_S window
    (sliding by a second) whose p95 is under ``p95_ms``; None if none is."""
    last = points.t[-1] if points.t.size else since
    at = since
    while at + RECOVERY_WINDOW_S <= last:
        ms, _ = window(points, at, at + RECOVERY_WINDOW_S)
        if ms.size and percentile(ms, 95) < p95_ms:
            return at + RECOVERY_WINDOW_S - since
        at += 1.0
    return None


def knee(points: Points, test: LoadTest, t0: float) -> dict[str, Any]:
    """The stress test's steps (VUs, requests/s, p95, errors) and its knee:
    the first step past which more users brought less than 20% more
    requests a second, or broke a threshold; None if none did."""
    rows = []
    for (start, end), stage in zip(test.steps, test.users[1::2], strict=False):
        ms, failed = window(points, t0 + start, t0 + end)
        rows.append(
            {
                "vus": stage.vus,
                "rps": round(ms.size / (end - start), 1),
                "p95_ms": round(percentile(ms, 95), 1),
                "error_rate": round(error_rate(failed), 4),
            }
        )
    limits = test.thresholds
    found = None
    for before, after in itertools.pairwise(rows):
        broke = (limits.p95_ms is not None and after["p95_ms"] > limits.p95_ms) or (
            limits.error_rate is not None and after["error_rate"] > limits.error_rate
        )
        flat = after["rps"] < before["rps"] * 1.2
        if broke or flat:
            found = {**before, "next": after, "why": "threshold" if broke else "throughput"}
            break
    return {"steps": rows, "knee": found}


def _growth(
    values: list[tuple[float, float]], start: float, end: float
) -> tuple[float, float] | None:
    """The mean over the middle third of [start, end] and over the last
    third; None without samples in both."""
    third = (end - start) / 3
    middle = [v for t, v in values if start + third <= t < start + 2 * third]
    last = [v for t, v in values if start + 2 * third <= t <= end]
    if not middle or not last:
        return None
    return float(np.mean(middle)), float(np.mean(last))


def slope(values: list[tuple[float, float]]) -> float:
    """Least-squares slope (per s) of (t, value) pairs."""
    if len(values) < 2:
        return 0.0
    t, v = np.array(values).T
    return float(np.polyfit(t - t[0], v, 1)[0])


def steady(samples: list[Sample], start: float, end: float) -> list[Verdict]:
    """No growth in memory, connections or queue depth over the hold."""
    # (threshold, series, the growth allowed as a share, at least, unit)
    checks: list[tuple[str, list[tuple[float, float]], float, float, str]] = []
    # The stack's, not the load generator's (its buffers of points grow).
    for name in sorted({name for s in samples for name in s.memory} - {GENERATOR}):
        series = [(s.t, s.memory[name] / 2**20) for s in samples if name in s.memory]
        checks.append(
            (f"{name} memory", series, MEMORY_GROWTH_MAX, MEMORY_GROWTH_FLOOR_MIB, " MiB")
        )
    for label, values in (
        ("PostgreSQL connections", [(s.t, s.postgres_connections) for s in samples]),
        ("Redis clients", [(s.t, s.redis_clients) for s in samples]),
    ):
        series = [(t, float(v)) for t, v in values if v is not None]
        checks.append((label, series, CONNECTIONS_GROWTH_MAX, CONNECTIONS_GROWTH_FLOOR, ""))
    verdicts = []
    for label, series, share, floor, unit in checks:
        threshold = f"{label} grows < {share:.0%} (or {floor:g}{unit})"
        growth = _growth(series, start, end)
        if growth is None:
            verdicts.append(Verdict(threshold, "no samples", False))
            continue
        middle, last = growth
        verdicts.append(
            Verdict(
                threshold,
                f"{middle:.1f} -> {last:.1f}{unit}",
                last - middle <= max(middle * share, floor),
            )
        )
    tail = [s for s in samples if end - (end - start) / 3 <= s.t <= end]
    outbox = max((sum(v["outbox"] for v in s.services.values()) for s in tail), default=0.0)
    lag = max((v["consumer_lag_s"] for s in tail for v in s.services.values()), default=0.0)
    verdicts += [
        Verdict(
            f"outbox waiting <= {OUTBOX_MAX:.0f} events",
            f"at most {outbox:.0f}",
            outbox <= OUTBOX_MAX,
        ),
        Verdict(
            f"consumer lag <= {CONSUMER_LAG_MAX_S:.0f} s",
            f"at most {lag:.1f} s",
            lag <= CONSUMER_LAG_MAX_S,
        ),
    ]
    return verdicts


def judge(
    test: LoadTest,
    points: Points,
    samples: list[Sample],
    faults: list[FaultEvent],
    check: Check,
    t0: float,
) -> tuple[list[Verdict], dict[str, Any]]:
    """Every threshold of ``test``, and the figures worth reporting besides
    (the knee, the spike's recovery)."""
    limits = test.thresholds
    verdicts: list[Verdict] = []
    extra: dict[str, Any] = {}
    ms, failed = points.ms, points.failed
    during = ""
    if test.judged_until is not None:
        ms, failed = window(points, t0, t0 + test.judged_until)
        during = f" up to {test.seed_users:,} users (scaled)"
    p95, p99, errors = percentile(ms, 95), percentile(ms, 99), error_rate(failed)
    if limits.p95_ms is not None:
        verdicts.append(
            Verdict(f"p95 < {limits.p95_ms:.0f} ms{during}", f"{p95:.1f} ms", p95 < limits.p95_ms)
        )
    if limits.p99_ms is not None:
        verdicts.append(
            Verdict(f"p99 < {limits.p99_ms:.0f} ms{during}", f"{p99:.1f} ms", p99 < limits.p99_ms)
        )
    if limits.error_rate is not None:
        verdicts.append(
            Verdict(
                f"errors < {pct(limits.error_rate)}{during}",
                pct(errors),
                errors < limits.error_rate,
            )
        )
    if test.steps:
        extra["stress"] = knee(points, test, t0)
    if test.peak is not None and limits.window_error_rate is not None:
        start, end = t0 + test.peak[0], t0 + test.peak[1]
        _, failed = window(points, start, end)
        rate = error_rate(failed)
        verdicts.append(
            Verdict(
                f"errors during the spike < {pct(limits.window_error_rate)}",
                pct(rate),
                rate < limits.window_error_rate,
            )
        )
        assert limits.recovery_s is not None
        assert limits.recovery_p95_ms is not None
        recovered = recovery(points, end, limits.recovery_p95_ms)
        extra["recovery_s"] = recovered
        verdicts.append(
            Verdict(
                f"p95 back under {limits.recovery_p95_ms:.0f} ms within {limits.recovery_s:.0f} s",
                "never" if recovered is None else f"{recovered:.0f} s",
                recovered is not None and recovered <= limits.recovery_s,
            )
        )
    if test.faults and limits.window_error_rate is not None:
        for event in faults:
            end = (event.end or points.t[-1]) + FAULT_TAIL_S
            _, failed = window(points, event.start, end)
            rate = error_rate(failed)
            verdicts.append(
                Verdict(
                    f"{event.kind}: errors < {pct(limits.window_error_rate)}, recovered",
                    f"{pct(rate)}, "
                    + (
                        f"healthy after {event.end - event.start:.1f} s"
                        if event.end
                        else str(event.error)
                    ),
                    rate < limits.window_error_rate and event.end is not None,
                )
            )
        missing = len(test.faults) - len(faults)
        if missing:
            verdicts.append(Verdict("every fault injected", f"{missing} not", False))
    if limits.delivery_p95_ms is not None:
        delivery = np.array([ms for _, ms in points.delivery])
        measured = percentile(delivery, 95)
        verdicts.append(
            Verdict(
                f"delivery p95 < {limits.delivery_p95_ms:.0f} ms",
                f"{measured:.1f} ms of {delivery.size:,} deliveries",
                delivery.size > 0 and measured < limits.delivery_p95_ms,
            )
        )
    if limits.socket_error_rate is not None:
        rate = points.socket_errors / points.sockets_opened if points.sockets_opened else 1.0
        verdicts.append(
            Verdict(
                f"socket errors < {pct(limits.socket_error_rate)}",
                f"{points.socket_errors} of {points.sockets_opened} sockets",
                rate < limits.socket_error_rate,
            )
        )
    if limits.steady:
        hold_start = t0 + test.users[0].seconds
        hold_end = hold_start + test.users[1].seconds
        verdicts += steady(samples, hold_start, hold_end)
    acked = sum(check.acked.values())
    verdicts += [
        Verdict(
            "nothing acknowledged lost",
            f"{sum(check.lost.values())} lost of {acked:,} acknowledged writes",
            acked > 0 and not check.lost,
        ),
        Verdict(
            "no live message missed",
            f"{check.missed} missed of {check.expected:,} expected in {check.watches} watches",
            check.expected > 0 and not check.missed,
        ),
    ]
    return verdicts, extra

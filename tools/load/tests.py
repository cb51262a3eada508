"""The six load tests: their shapes and thresholds, the seed's, scaled by one
setting.

The seed's tests (its "Load Test Results" table) run 5 to 60 minutes with up
to 2,000 users. ``scale`` (LOAD_SCALE, 0.1 by default) multiplies both the
users and the durations, so the defaults finish each test in a few minutes
on a laptop and ``LOAD_SCALE=1`` runs the seed's own lengths; no phase
shrinks below MIN_PHASE_S, so that each still holds enough seconds to judge.

A shape is k6's ``scenarios`` (ramping VUs of the user model and of
watchers, load.js); thresholds are judged by verdicts.py from k6's raw
points, so that a threshold over a window (during a fault, after a spike)
uses the same figures as one over the whole run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .chaos import FAULTS, Fault

MIN_PHASE_S = 15.0
# Watchers beside the users in the tests that are not about sockets.
WATCHER_SHARE = 0.1


@dataclass(frozen=True)
class Stage:
    """Ramp to ``vus`` over ``seconds`` (k6's ramping-vus stage)."""

    seconds: float
    vus: int

    def k6(self) -> dict[str, Any]:
        return {"duration": f"{math.ceil(self.seconds)}s", "target": self.vus}


@dataclass(frozen=True)
class Thresholds:
    """The seed's thresholds; None where a test has none of that kind."""

    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    # During the spike's peak, and during each fault of the chaos test.
    window_error_rate: float | None = None
    # The spike: seconds after it until the p95 is back under recovery_p95_ms.
    recovery_s: float | None = None
    recovery_p95_ms: float | None = None
    delivery_p95_ms: float | None = None
    socket_error_rate: float | None = None
    # Endurance: no growth in memory, connections or queue depth.
    steady: bool = False


@dataclass(frozen=True)
class LoadTest:
    name: str
    summary: str
    # The seed's length (minutes) and peak users, what scale 1 runs.
    seed_minutes: float
    seed_users: int
    users: Sequence[Stage]
    watchers: Sequence[Stage]
    thresholds: Thresholds
    faults: Sequence[Fault] = field(default_factory=tuple)
    # The stress test's steps: (start, end) seconds of each, for the knee.
    steps: Sequence[tuple[float, float]] = field(default_factory=tuple)
    # The spike test's peak: (start, end) seconds.
    peak: tuple[float, float] | None = None
    # The seconds the whole-run thresholds judge (the stress test's, up to
    # the seed's peak: past it the steps look for the knee); None: all.
    judged_until: float | None = None

    @property
    def seconds(self) -> float:
        return max(sum(s.seconds for s in self.users), sum(s.seconds for s in self.watchers))

    def scenarios(self) -> dict[str, Any]:
        """k6's ``scenarios`` option for load.js."""
        scenarios: dict[str, Any] = {}
        for name, stages in (("users", self.users), ("watchers", self.watchers)):
            if stages:
                scenarios[name] = {
                    "executor": "ramping-vus",
                    "exec": name[:-1],
                    "startVUs": 0,
                    "stages": [stage.k6() for stage in stages],
                    "gracefulRampDown": "5s",
                    "gracefulStop": "5s",
                }
        return scenarios

    @property
    def peak_vus(self) -> int:
        return max((s.vus for s in self.users), default=0) + max(
            (s.vus for s in self.watchers), default=0
        )


def _phase(seed_s: float, scale: float) -> float:
    return max(seed_s * scale, MIN_PHASE_S)


def _vus(seed_users: float, scale: float) -> int:
    return max(1, round(seed_users * scale))


def _watchers(stages: Sequence[Stage]) -> list[Stage]:
    return [Stage(s.seconds, max(1, round(s.vus * WATCHER_SHARE))) for s in stages]


def _ramp_hold_down(
    seed_seconds: tuple[float, float, float], vus: int, scale: float
) -> list[Stage]:
    """Ramp up to ``vus``, hold, ramp down (the seed's seconds of each, scaled)."""
    up, hold, down = (_phase(seconds, scale) for seconds in seed_seconds)
    return [Stage(up, vus), Stage(hold, vus), Stage(down, 0)]


def basic(scale: float) -> LoadTest:
    users = _ramp_hold_down((180, 1200, 180), _vus(500, scale), scale)
    return LoadTest(
        "basic",
        "ramp to a steady load, hold it, ramp down",
        26,
        500,
        users,
        _watchers(users),
        Thresholds(p95_ms=200, p99_ms=500, error_rate=0.01),
    )


def stress(scale: float) -> LoadTest:
    """Steps of 1/4 to 8 times the seed's 1,200 users. The seed's
    thresholds hold up to its peak (the third step); past it the steps look
    for the knee (where more users stop bringing more requests, or the p95
    passes the threshold)."""
    step_s = _phase(1200 / 7, scale)
    users: list[Stage] = []
    steps: list[tuple[float, float]] = []
    at = 0.0
    for factor in (0.25, 0.5, 1, 2, 4, 8):
        vus = _vus(1200 * factor, scale)
        # A short ramp into the step, then the step held.
        ramp = min(5.0, step_s / 4)
        users += [Stage(ramp, vus), Stage(step_s - ramp, vus)]
        steps.append((at + ramp, at + step_s))
        at += step_s
    users.append(Stage(_phase(60, scale), 0))
    return LoadTest(
        "stress",
        "step up past the knee",
        20,
        1200,
        users,
        _watchers(users),
        Thresholds(p95_ms=500, error_rate=0.10),
        steps=steps,
        judged_until=steps[2][1],
    )


def spike(scale: float) -> LoadTest:
    base, top = _vus(200, scale), _vus(2000, scale)
    ramp, before = _phase(30, scale), _phase(90, scale)
    during, after = _phase(60, scale), _phase(120, scale)
    users = [
        Stage(ramp, base),
        Stage(before, base),
        Stage(2, top),
        Stage(during, top),
        Stage(2, base),
        Stage(after, base),
        Stage(5, 0),
    ]
    start = ramp + before
    return LoadTest(
        "spike",
        "sudden x10 for a minute, back",
        5,
        2000,
        users,
        _watchers(users),
        Thresholds(window_error_rate=0.20, recovery_s=_phase(60, scale), recovery_p95_ms=200),
        peak=(start, start + 2 + during),
    )


def chaos(scale: float) -> LoadTest:
    vus = _vus(500, scale)
    ramp, slot = _phase(60, scale), max(_phase(120, scale), 20.0)
    faults = [Fault(ramp + i * slot + 5, kind) for i, kind in enumerate(FAULTS)]
    users = [
        Stage(ramp, vus),
        Stage(len(FAULTS) * slot + _phase(180, scale), vus),
        Stage(5, 0),
    ]
    return LoadTest(
        "chaos",
        "basic load while faults are injected, one at a time",
        14,
        500,
        users,
        _watchers(users),
        Thresholds(p95_ms=2000, window_error_rate=0.30),
        faults=faults,
    )


def endurance(scale: float) -> LoadTest:
    users = _ramp_hold_down((300, 3000, 300), _vus(200, scale), scale)
    return LoadTest(
        "endurance",
        "a long steady load",
        60,
        200,
        users,
        _watchers(users),
        Thresholds(p95_ms=300, error_rate=0.02, steady=True),
    )


def websocket(scale: float) -> LoadTest:
    """Sockets held while messages flow: the seed's 500 users are watchers,
    with as many users of the model writing beside them."""
    stages = _ramp_hold_down((90, 390, 90), _vus(500, scale), scale)
    return LoadTest(
        "websocket",
        "sockets held while messages flow",
        9.5,
        500,
        stages,
        stages,
        Thresholds(delivery_p95_ms=100, socket_error_rate=0.05, error_rate=0.05),
    )


TESTS = {test.__name__: test for test in (basic, stress, spike, chaos, endurance, websocket)}

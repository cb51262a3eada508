"""The bench's goals scale with the machine: a rate is for a run whose wrk
ceiling is the goal's, and the verdict uses the ceiling of the run at hand."""

from __future__ import annotations

from tools.bench.model import Goal, Measurement


def _run(requests_per_s: float, p95_ms: float) -> Measurement:
    return Measurement(
        requests=int(requests_per_s * 10),
        duration_s=10,
        errors=0,
        error_rate=0.0,
        p50_ms=p95_ms / 2,
        p95_ms=p95_ms,
        p99_ms=p95_ms,
    )


def test_a_goal_scales_with_the_runs_ceiling() -> None:
    goal = Goal(requests_per_s=5_000, p95_ms=200)
    on_a_slower_machine = goal.scaled(25_000)
    assert on_a_slower_machine.requests_per_s == 2_500
    assert on_a_slower_machine.at_ceiling == 25_000
    assert on_a_slower_machine.missed(_run(2_600, 150)) == []
    assert goal.missed(_run(2_600, 150)) == ["2,600 req/s"]
    assert "at a ceiling of 25,000" in str(on_a_slower_machine)


def test_the_seeds_absolute_targets_and_unmeasured_ceilings_do_not_scale() -> None:
    seeds = Goal(requests_per_s=16_667, p95_ms=50, at_ceiling=None)
    assert seeds.scaled(25_000) == seeds
    assert "ceiling" not in str(seeds)
    issue = Goal(requests_per_s=5_000, p95_ms=200)
    assert issue.scaled(0) == issue
    assert issue.missed(_run(6_000, 250)) == ["p95 250.0 ms"]

"""The load-test suite (tools/load): its loss checker against a real k6 run
on the test stack, shown failing once writes it acknowledged are gone; the
verdicts' arithmetic; the tests' shapes at the default scale and the seed's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psycopg
import pytest
from social_stack.local import Endpoints
from social_stack.testing import create_account, create_post, fresh_address

from tools.bench.prepare import make_photo
from tools.load import checker, verdicts
from tools.load.points import Points
from tools.load.run import Account, run_k6, write_users
from tools.load.sampler import Sample
from tools.load.tests import TESTS, LoadTest, Stage, Thresholds

# Writes only, on one post that the watchers hold.
WRITES = {"message": 6, "like": 3, "post": 1}


@pytest.mark.timeout(180)
def test_the_checker_passes_a_whole_run_and_fails_one_that_lost_writes(
    stack: Endpoints, tmp_path: Path
) -> None:
    accounts = [create_account(stack.gateway_url) for _ in range(4)]
    watched = create_post(stack.gateway_url, accounts[0])["id"]
    users = tmp_path / "users.json"
    write_users(
        users,
        [Account(a.username, a.password, a.access_token, time.time()) for a in accounts],
        [accounts[0].username],
    )
    photo = tmp_path / "photo.jpg"
    make_photo(photo, 64, 48)
    shape = LoadTest(
        "checker",
        "writes on one watched post",
        0,
        0,
        users=[Stage(1, 3), Stage(9, 3)],
        watchers=[Stage(1, 1), Stage(15, 1)],
        thresholds=Thresholds(),
    )
    run = run_k6(
        shape, stack, users, photo, tmp_path, fresh_address(), WRITES, [watched], watch_s=4
    )

    whole = checker.check(run.points, stack.database_admin_url)
    assert whole.ok, whole.to_json()
    assert whole.acked["message"] > 0, whole.to_json()
    assert whole.acked["like"] > 0, whole.to_json()
    assert whole.expected > 0, whole.to_json()
    assert whole.received == whole.expected
    judged, _ = verdicts.judge(shape, run.points, run.samples, [], whole, run.t0)
    assert all(v.passed for v in judged), judged

    # A broken build: one acknowledged message and one like never reached
    # the database, and a watcher missed a message it was sent.
    message = next(a for a in run.points.acks if a.kind == "message")
    like = next(a for a in run.points.acks if a.kind == "like")
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        conn.execute("DELETE FROM messages.messages WHERE id = %s", (message.id,))
        conn.execute(
            "DELETE FROM posts.likes WHERE post_id = %s"
            " AND user_id = (SELECT id FROM auth.users WHERE username = %s)",
            (like.post, like.user),
        )
    received = set(run.points.received)
    # Not the message deleted above: one never stored is not one missed.
    received.discard(next(seen for seen in sorted(received) if seen[1] != message.id))
    broken = checker.check(
        dataclasses.replace(run.points, received=received), stack.database_admin_url
    )
    assert dict(broken.lost) == {"message": 1, "like": 1}
    assert broken.missed == 1
    judged, _ = verdicts.judge(shape, run.points, run.samples, [], broken, run.t0)
    failed = {v.threshold for v in judged if not v.passed}
    assert failed == {"nothing acknowledged lost", "no live message missed"}


def _points(t: Sequence[float], ms: Sequence[float], failed: Sequence[bool] = ()) -> Points:
    return Points(
        np.array(t), np.array(ms), np.array(failed or [False] * len(t), dtype=bool), ["x"] * len(t)
    )


def test_the_knee_is_the_last_step_that_brought_more_requests() -> None:
    test = TESTS["stress"](0.1)
    t: list[float] = []
    ms: list[float] = []
    # Requests/s per step: doubling, doubling, then flat at a worse p95.
    for (start, end), rate, latency in zip(
        test.steps, (10, 20, 40, 42, 43, 43), (5, 5, 6, 600, 900, 900), strict=True
    ):
        count = int(rate * (end - start))
        t += list(np.linspace(start, end, count, endpoint=False))
        ms += [latency] * count
    found = verdicts.knee(_points(t, ms), test, 0.0)["knee"]
    assert found is not None
    assert (found["vus"], found["rps"], found["why"]) == (test.users[5].vus, 40.0, "threshold")
    # The seed's thresholds judge the steps up to its peak, the third.
    judged, _ = verdicts.judge(test, _points(t, ms), [], [], checker.Check(), 0.0)
    p95 = next(v for v in judged if v.threshold.startswith("p95"))
    assert (p95.threshold, p95.measured, p95.passed) == (
        "p95 < 500 ms up to 1,200 users (scaled)",
        "6.0 ms",
        True,
    )


def test_the_spike_recovers_when_a_window_is_fast_again() -> None:
    test = TESTS["spike"](0.1)
    assert test.peak is not None
    start, end = test.peak
    t = list(np.arange(0, end + 40, 0.1))
    # Slow from the spike's start until 12 s after its end.
    ms = [800.0 if start <= x < end + 12 else 20.0 for x in t]
    failed = [bool(start <= x < start + 2) for x in t]
    judged, extra = verdicts.judge(test, _points(t, ms, failed), [], [], checker.Check(), 0.0)
    assert extra["recovery_s"] == pytest.approx(17.0)
    by_name = {v.threshold: v for v in judged}
    assert by_name["errors during the spike < 20.00%"].passed
    assert by_name["p95 back under 200 ms within 15 s"].passed is False
    # Nothing written, nothing watched: the loss checks cannot pass vacuously.
    assert not by_name["nothing acknowledged lost"].passed


@pytest.mark.parametrize("name", sorted(TESTS))
def test_each_test_runs_minutes_by_default_and_the_seeds_length_at_scale_1(name: str) -> None:
    small, seed = TESTS[name](0.1), TESTS[name](1.0)
    assert 30 <= small.seconds <= 8 * 60
    # The seed's length, give or take the short ramps added.
    assert seed.seconds / 60 == pytest.approx(seed.seed_minutes, rel=0.12)
    assert max(s.vus for s in [*seed.users, *seed.watchers]) >= seed.seed_users // 2
    for shape in (small, seed):
        scenarios = shape.scenarios()
        assert set(scenarios) in ({"users"}, {"users", "watchers"})
        assert all(stage["target"] >= 0 for s in scenarios.values() for stage in s["stages"])


def test_endurance_fails_a_component_whose_memory_grows() -> None:
    mib = 2**20
    samples = [
        Sample(
            t=float(t),
            cpu_s={},
            memory={"posts": 60 * mib + t * mib // 10, "auth": 80 * mib, "k6": t * mib},
            postgres_connections=40,
            redis_clients=30,
            services={"posts": {"outbox": 0.0, "consumer_lag_s": 0.1}},
        )
        for t in range(300)
    ]
    verdicts_by_name = {v.threshold.split(" ")[0]: v for v in verdicts.steady(samples, 0, 299)}
    # posts grows 10 MiB between the middle and the last third of the hold.
    assert not verdicts_by_name["posts"].passed
    assert verdicts_by_name["auth"].passed
    # The load generator's memory is not the stack's.
    assert "k6" not in verdicts_by_name
    assert all(v.passed for n, v in verdicts_by_name.items() if n not in ("posts",))

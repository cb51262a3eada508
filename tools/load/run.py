"""Run one load test against the stack `make up` started: prepare its users,
run k6 (load.js) with the stack sampled and, for chaos, faults injected;
then check for loss, judge, write the report and delete what the run
posted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from social_stack.local import Endpoints

from tools.bench import stackapi
from tools.bench.dataset import Social, parallel, zipf_cdf
from tools.bench.plans import AddressBlock
from tools.bench.prepare import make_photo
from tools.bench.settings import load_settings

from . import chaos, checker, points, report, verdicts
from .sampler import Sample, Sampler
from .tests import LoadTest

K6_SCRIPT = Path(__file__).parent / "k6" / "load.js"
RESULTS_DIR = Path("results")
# The photo the post action uploads: a phone photo as an app resizes it.
PHOTO_SIZE = (1024, 768)
# Login VUs spread over a /24 of source addresses: 254 x 20 logins a minute.
LOGIN_ADDRESSES = 254


def log(message: str) -> None:
    print(f"load: {message}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """What a k6 run of a test gave."""

    points: points.Points
    samples: list[Sample]
    faults: list[chaos.FaultEvent]
    # When k6 started (unix s): the plots' and windows' zero.
    t0: float


@dataclass(frozen=True)
class Account:
    """An account the VUs use: its password, and a fresh access token with
    when it was issued (unix s), the session an app would resume."""

    username: str
    password: str
    access_token: str
    issued_at: float


def write_users(path: Path, accounts: list[Account], authors: list[str]) -> None:
    """load.js's users file: the accounts VUs use, and the authors the
    profile action reads, by rank with their Zipf CDF."""
    cdf = zipf_cdf(len(authors))
    path.write_text(
        json.dumps(
            {
                "accounts": [
                    {"u": a.username, "p": a.password, "t": a.access_token, "a": a.issued_at * 1000}
                    for a in accounts
                ],
                "authors": [{"u": u, "c": c} for u, c in zip(authors, cdf, strict=True)],
            }
        )
    )


def run_k6(
    test: LoadTest,
    endpoints: Endpoints,
    users_file: Path,
    photo: Path,
    out: Path,
    local_ips: str,
    mix: Mapping[str, int] | None = None,
    posts: list[str] | None = None,
    watch_s: float = 30.0,
) -> Run:
    """Run ``test``'s shape with k6, the stack sampled meanwhile and the
    test's faults injected on schedule; k6's raw points and summary go to
    ``out``. ``mix`` and ``posts`` replace the user model's shares and the
    posts it picks (load.js)."""
    ws_url = endpoints.gateway_url.replace("http", "ws", 1) + "/ws"
    variables = {
        "LOAD_BASE_URL": endpoints.gateway_url,
        "LOAD_WS_URL": ws_url,
        "LOAD_USERS_FILE": str(users_file),
        "LOAD_PHOTO": str(photo),
        "LOAD_SCENARIOS": json.dumps(test.scenarios()),
        "LOAD_MIX": json.dumps(dict(mix)) if mix else "",
        "LOAD_POSTS": json.dumps(posts) if posts else "",
        "LOAD_WATCH_S": str(watch_s),
        "LOAD_SUMMARY": str(out / "k6-summary.json"),
    }
    argv = [str(Path(sys.executable).parent / "k6"), "run", "--no-color", "--local-ips", local_ips]
    argv += ["--out", f"json={out / 'k6-points.json.gz'}"]
    for name, value in variables.items():
        argv += ["-e", f"{name}={value}"]
    argv.append(str(K6_SCRIPT))
    run_dir = Path(endpoints.run_dir)
    t0 = time.time()
    # k6's progress goes to the terminal; the thresholds are ours to judge.
    k6 = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    sampler = Sampler(endpoints, run_dir, k6.pid).start()
    schedule = chaos.Schedule(run_dir, list(test.faults)).start()
    try:
        returncode = k6.wait()
    finally:
        k6.kill()  # if we were interrupted
        faults = schedule.stop()
        samples = sampler.stop()
    if returncode != 0:
        raise stackapi.BenchError(f"k6 exited with {returncode}")
    return Run(points.read(out / "k6-points.json.gz"), samples, faults, t0)


def cleanup(target: stackapi.Target, social: Social, run: Run) -> int:
    """Delete the posts and messages the run wrote (as their authors); likes
    stay, as they are a state, not a pile. Returns how many were deleted."""
    tokens = {}
    if social.dataset is not None:
        writers = {ack.user for ack in run.points.acks if ack.kind != "like"}
        users = [u for u in social.dataset.users if u.username in writers]
        social.fresh_tokens(users)
        tokens = {u.username: u.access_token for u in users}
    deletions = [
        (
            f"/api/v1/posts/{ack.id}"
            if ack.kind == "post"
            else f"/api/v1/posts/{ack.post}/messages/{ack.id}",
            f"Bearer {tokens[ack.user]}",
        )
        for ack in run.points.acks
        if ack.kind != "like" and ack.user in tokens
    ]
    statuses = parallel("deleted", deletions, lambda d: stackapi.delete(target, *d))
    return statuses.count(204)


def run_test(test: LoadTest, scale: float, endpoints: Endpoints) -> bool:
    """Run ``test`` end to end; True if every threshold held."""
    settings = load_settings({"BENCH_BASE_URL": endpoints.gateway_url})
    started = dt.datetime.now(dt.UTC)
    out = (RESULTS_DIR / f"load-{test.name}-{started:%Y%m%dT%H%M%SZ}").resolve()
    out.mkdir(parents=True)
    block = AddressBlock.for_time(time.time())
    social = Social(settings)
    log(f"{test.name}: preparing {settings.social_users} users (cached between runs)")
    dataset = social.prepare(settings.social_users, settings.social_follows, block.social)
    photo = out / "photo.jpg"
    make_photo(photo, *PHOTO_SIZE)
    social.fresh_tokens()
    accounts = [Account(u.username, u.password, u.access_token, u.token_at) for u in dataset.users]
    write_users(out / "users.json", accounts, [u.username for u in dataset.users])
    log(
        f"{test.name}: {test.summary}: {test.seconds:.0f} s, up to {test.peak_vus:,} VUs "
        f"(scale {scale:g}); results in {out}"
    )
    try:
        run = run_k6(
            test,
            endpoints,
            out / "users.json",
            photo,
            out,
            block.login_range(LOGIN_ADDRESSES, warmup=False),
        )
    finally:
        (out / "users.json").unlink()
        photo.unlink()
    log(f"{test.name}: checking {len(run.points.acks):,} acknowledged writes and the watches")
    check = checker.check(run.points, endpoints.database_admin_url)
    judged, extra = verdicts.judge(test, run.points, run.samples, run.faults, check, run.t0)
    (out / "stack-samples.json").write_text(json.dumps([asdict(s) for s in run.samples]))
    plots = report.plot(out, test, run.points, run.samples, run.faults, run.t0)
    report.write(
        out, test, scale, judged, extra, check, run.faults, run.points, plots, run.samples, run.t0
    )
    log(f"{test.name}: deleting what the run posted")
    log(f"{test.name}: {cleanup(settings, social, run):,} posts and messages deleted")
    print((out / "report.md").read_text())
    return all(v.passed for v in judged)


def scale_setting(env: Mapping[str, str] = os.environ) -> float:
    text = env.get("LOAD_SCALE", "").strip() or "0.1"
    try:
        scale = float(text)
    except ValueError:
        raise stackapi.BenchError(f"LOAD_SCALE must be a number, got {text!r}") from None
    if not 0 < scale <= 10:
        raise stackapi.BenchError(f"LOAD_SCALE must be in (0, 10], got {scale}")
    return scale

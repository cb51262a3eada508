"""The local stack restarts what crashes, as Kubernetes restarts a pod's
container: for the tests' stack (a thread of the session), for `make up` (a
detached supervisor process) and, the same code, for `make dev`."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from social_stack.local import Endpoints, Stack
from social_stack.processes import Component, Probe, is_alive, is_running, start
from social_stack.supervisor import Backoff, Supervisor
from social_stack.testing import answers, client, stack_cli, wait_until


def _status(run_dir: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "social_stack", "--run-dir", str(run_dir), "status"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _line(status: str, name: str) -> str:
    return next(line for line in status.splitlines() if line.split()[0] == name)


def _feed_answers(gateway_url: str) -> bool:
    try:
        with client(gateway_url) as http:
            return http.get("/api/v1/posts", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_killed_service_and_gateway_come_back_without_being_asked(
    stack: Endpoints, stack_runner: Stack
) -> None:
    posts = next(c for c in stack_runner.components if c.name == "posts")
    envoy = next(c for c in stack_runner.components if c.name == "envoy")
    before = {c.name: (c.pid, c.restarts) for c in (posts, envoy)}
    for component in (posts, envoy):
        os.kill(component.pid, signal.SIGKILL)
    # Nothing but the supervisor brings them back.
    wait_until(
        lambda: (
            posts.restarts == before["posts"][1] + 1 and envoy.restarts == before["envoy"][1] + 1
        ),
        timeout=10,
        what="both started again",
    )
    assert posts.pid != before["posts"][0]
    assert envoy.pid != before["envoy"][0]
    assert posts.last_exit == envoy.last_exit == -signal.SIGKILL
    wait_until(lambda: _feed_answers(stack.gateway_url), timeout=30, what="the feed answers")
    status = _status(stack.run_dir)
    assert status.returncode == 0, status.stdout
    for name in ("posts", "envoy"):
        line = _line(status.stdout, name)
        assert "healthy" in line, line
        assert "(last: SIGKILL)" in line, line
    assert "supervisor running" in status.stdout
    # The record others read has the new process, so `make down` stops it.
    recorded = json.loads((Path(stack.run_dir) / "stack.json").read_text())["components"]
    assert next(c for c in recorded if c["name"] == "posts")["pid"] == posts.pid

    # A deliberate restart is not a crash: the supervisor leaves it alone.
    restarts = posts.restarts
    stack_runner.restart("posts")
    assert posts.restarts == restarts
    assert posts.last_exit == -signal.SIGKILL
    assert is_running(posts)
    wait_until(lambda: _feed_answers(stack.gateway_url), timeout=30, what="the feed answers")


def test_a_component_that_fails_at_once_is_backed_off_not_spun(tmp_path: Path) -> None:
    component = Component(
        name="crasher",
        argv=[sys.executable, "-c", "raise SystemExit(3)"],
        log=str(tmp_path / "crasher.log"),
        probe=Probe("tcp", "127.0.0.1:1"),
    )
    starts: list[float] = []
    changed = threading.Event()

    def start_again(c: Component, reason: str) -> subprocess.Popen[bytes]:
        starts.append(time.monotonic())
        return start(c, tie_to_parent=True, again=reason)

    supervisor = Supervisor(start_again, changed.set, Backoff(initial=0.1, cap=0.4))
    starts.append(time.monotonic())
    supervisor.watch(component, start(component, tie_to_parent=True))
    try:
        wait_until(lambda: component.restarts >= 5, timeout=10, what="five restarts")
    finally:
        supervisor.close()
        supervisor.join(timeout=5)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # 0.1 s, doubling, capped at 0.4 s (plus the process's own start and exit).
    for gap, least in zip(gaps, [0.1, 0.2, 0.4, 0.4, 0.4], strict=False):
        assert gap >= least, gaps
    assert component.last_exit == 3
    assert changed.is_set()
    log = Path(component.log).read_text()
    assert log.count("started again by the supervisor: exited (exit 3)") == component.restarts


def test_a_run_that_lasted_resets_the_back_off() -> None:
    backoff = Backoff(initial=0.5, cap=16.0, reset_after=10.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 16, 16]


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("supervised")
    # PostgreSQL may run as another user (nobody, when we are root).
    for directory in (path, *path.parents):
        if directory == Path("/tmp"):
            break
        directory.chmod(directory.stat().st_mode | 0o011)
    return path


def test_make_up_leaves_a_supervisor_that_restarts_and_make_down_stops(run_dir: Path) -> None:
    up = stack_cli(run_dir, "up", "--free-ports")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((run_dir / "stack.json").read_text())
        supervisor = state["supervisor"]
        assert is_alive(supervisor["pid"], supervisor["start_time"])
        messages = next(c for c in state["components"] if c["name"] == "messages")
        os.kill(messages["pid"], signal.SIGKILL)

        def restarted() -> bool:
            status = _status(run_dir)
            line = _line(status.stdout, "messages")
            return status.returncode == 0 and "restarts 1 (last: SIGKILL)" in line

        wait_until(restarted, timeout=30, what="messages restarted by the supervisor")
        gateway = state["endpoints"]["gateway_url"]
        assert answers(f"{gateway}/api/v1/messages/healthz", 200)()
        latest = json.loads((run_dir / "stack.json").read_text())["components"]
        again = Component.from_record(next(c for c in latest if c["name"] == "messages"))
        assert again.pid != messages["pid"]
        assert is_running(again)
    finally:
        down = stack_cli(run_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not is_alive(supervisor["pid"], supervisor["start_time"])
    # The restarted process too: the supervisor stopped what it supervised.
    assert not is_running(again)
    assert _status(run_dir).returncode == 1

"""The chaos test's faults, injected into the stack `make up` started, one at
a time on the test's schedule, each recorded as an event (when it was
injected, when the component was healthy again).

  kill_posts         SIGKILL to a posts process: its requests in flight are lost
  restart_redis      SIGTERM to Redis (an orchestrator's restart; it saves first)
  restart_postgres   SIGINT to PostgreSQL (its fast shutdown: clients cut off)
  kill_realtime      SIGKILL to realtime: every socket drops at once
  stop_s3            SIGSTOP to the S3 server for STOP_S3_S, then SIGCONT: a
                     store that hangs rather than refuses, the worse case

The stack's supervisor starts what exited again (0.5 s later, see
social_stack.supervisor), as Kubernetes would; nothing here starts anything.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from social_stack.local import load_state
from social_stack.processes import Component, is_running

STOP_S3_S = 15.0
RECOVERY_TIMEOUT_S = 120.0

# What each fault does (the chaos test injects them in this order): the
# component, the signal.
FAULTS: dict[str, tuple[str, signal.Signals]] = {
    "kill_posts": ("posts", signal.SIGKILL),
    "restart_redis": ("redis", signal.SIGTERM),
    "restart_postgres": ("postgres", signal.SIGINT),
    "kill_realtime": ("realtime", signal.SIGKILL),
    "stop_s3": ("seaweedfs", signal.SIGSTOP),
}


@dataclass(frozen=True)
class Fault:
    """A fault the chaos test injects ``at`` seconds in (a kind of FAULTS)."""

    at: float
    kind: str


@dataclass
class FaultEvent:
    kind: str
    component: str
    start: float
    # When the component was healthy again (unix s); None if it never was.
    end: float | None = None
    error: str | None = None


def _component(run_dir: Path, name: str) -> Component:
    loaded = load_state(run_dir)
    if loaded is None:
        raise RuntimeError("no stack is running")
    return next(c for c in loaded[1] if c.name == name)


def _wait_healthy(run_dir: Path, name: str, old_pid: int | None) -> float | None:
    """When ``name`` is running (as another process than ``old_pid``, when
    given) and healthy; None after RECOVERY_TIMEOUT_S."""
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    while time.monotonic() < deadline:
        component = _component(run_dir, name)
        if component.pid != old_pid and is_running(component) and component.probe.healthy():
            return time.time()
        time.sleep(0.2)
    return None


def inject(run_dir: Path, kind: str) -> FaultEvent:
    """Inject one fault now and wait until its component is healthy again."""
    name, sig = FAULTS[kind]
    component = _component(run_dir, name)
    event = FaultEvent(kind, name, time.time())
    try:
        os.kill(component.pid, sig)
        if sig == signal.SIGSTOP:
            try:
                time.sleep(STOP_S3_S)
            finally:  # never left frozen, whatever interrupts the sleep
                os.kill(component.pid, signal.SIGCONT)
            event.end = _wait_healthy(run_dir, name, None)
        else:
            event.end = _wait_healthy(run_dir, name, component.pid)
    except OSError as exc:
        event.error = str(exc)
    if event.end is None and event.error is None:
        event.error = f"{name} was not healthy again within {RECOVERY_TIMEOUT_S:.0f} s"
    return event


class Schedule:
    """Injects ``faults`` at their times after start(), in a thread."""

    def __init__(self, run_dir: Path, faults: list[Fault]) -> None:
        self.run_dir = run_dir
        self.faults = sorted(faults, key=lambda f: f.at)
        self.events: list[FaultEvent] = []
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-chaos", daemon=True)

    def start(self) -> Schedule:
        self._started = time.time()
        self._thread.start()
        return self

    def stop(self) -> list[FaultEvent]:
        """Cancel what has not started; wait for the fault under way."""
        self._cancel.set()
        self._thread.join()
        return self.events

    def _run(self) -> None:
        for fault in self.faults:
            if self._cancel.wait(max(0.0, self._started + fault.at - time.time())):
                return
            self.events.append(inject(self.run_dir, fault.kind))

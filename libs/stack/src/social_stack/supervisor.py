"""Keeping the stack's processes running, as Kubernetes keeps a pod's containers.

A process that exits (crashed, killed, or just ended) without being asked to
is started again after a back-off: half a second, doubling at each exit in a
row up to a cap, and back to half a second once a run lasted long enough to
count as recovered. So a process killed once is back within a second, and one
that fails at once is retried ever more slowly instead of spinning.

One thread per process waits for it to exit (``Popen.wait``: no polling). A
deliberate stop or restart of a component takes it out of the supervisor's
hands for that time (:meth:`Supervisor.held`), so the two never race.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from social_stack.processes import Component, StackError, exit_text


class Process(Protocol):
    """What the supervisor needs of a started process (``subprocess.Popen``)."""

    def wait(self) -> int: ...


@dataclass(frozen=True)
class Backoff:
    """How long to wait before starting an exited component again."""

    initial: float = 0.5
    cap: float = 16.0
    # A run this long counts as a recovery: the next exit waits ``initial`` again.
    reset_after: float = 10.0

    def delay(self, exits_in_a_row: int) -> float:
        return min(self.cap, self.initial * 2.0 ** max(0, exits_in_a_row - 1))


@dataclass
class _Watched:
    component: Component
    process: Process
    since: float  # time.monotonic() at its start


class Supervisor:
    """Restarts the components it watches when they exit unasked.

    ``start`` starts a component again (and returns its process); ``changed``
    is called after each change of a component's record (exit, back-off,
    restart), under the supervisor's lock, to save it where others read it.
    """

    def __init__(
        self,
        start: Callable[[Component, str], Process],
        changed: Callable[[], None],
        backoff: Backoff | None = None,
    ) -> None:
        self._start = start
        self._changed = changed
        self.backoff = backoff or Backoff()
        self._cond = threading.Condition()
        self._watched: dict[str, _Watched] = {}
        self._held: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def watch(self, component: Component, process: Process) -> None:
        """Supervises ``component``, whose current run is ``process``."""
        with self._cond:
            known = component.name in self._watched
            self._watched[component.name] = _Watched(component, process, time.monotonic())
            self._cond.notify_all()
        if not known:
            thread = threading.Thread(
                target=self._supervise,
                args=(component.name,),
                name=f"supervise-{component.name}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    @contextlib.contextmanager
    def held(self, name: str) -> Iterator[None]:
        """Takes ``name`` out of the supervisor's hands while the caller stops
        or restarts it: an exit meanwhile is the caller's, not a crash. A
        restart the supervisor has in progress completes first; one it has
        pending is dropped. Hand the new run over with :meth:`watch`."""
        with self._cond:
            self._held.add(name)
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._held.discard(name)
                self._cond.notify_all()

    def close(self) -> None:
        """Stops supervising (before the stack stops): exits from now on are final."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self, timeout: float) -> None:
        """Waits for the watching threads, which end once their process has."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _supervise(self, name: str) -> None:
        exits_in_a_row = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or name not in self._held)
                watched = self._watched.get(name)
                if self._closed or watched is None:
                    return
            code = watched.process.wait()
            ran = time.monotonic() - watched.since
            with self._cond:
                if self._closed or name in self._held or self._watched.get(name) is not watched:
                    continue  # stopped or restarted on purpose: not ours to restart
                exits_in_a_row = 1 if ran >= self.backoff.reset_after else exits_in_a_row + 1
                component = watched.component
                component.last_exit = code
                reason = f"exited ({exit_text(code)}) after {ran:.1f}s"
                while True:
                    delay = self.backoff.delay(exits_in_a_row)
                    component.backoff_until = time.time() + delay
                    self._changed()
                    _say(f"{name} {reason}; starting it again in {delay:.1f}s")
                    if self._cond.wait_for(
                        lambda: self._closed or name in self._held, timeout=delay
                    ):
                        component.backoff_until = 0.0
                        break  # stopping, or someone else restarts it
                    try:
                        process = self._start(
                            component, f"started again by the supervisor: {reason}"
                        )
                    except (StackError, OSError) as error:
                        exits_in_a_row += 1
                        reason = f"could not start ({error})"
                        continue
                    component.restarts += 1
                    component.backoff_until = 0.0
                    self._watched[name] = _Watched(component, process, time.monotonic())
                    self._changed()
                    break


def _say(line: str) -> None:
    print(f"supervisor: {line}", file=sys.stderr, flush=True)


__all__ = ["Backoff", "Process", "Supervisor"]

"""Starting, probing and stopping the stack's processes: only the ones it started."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    """A component failed to start or to become healthy."""


@dataclass(frozen=True)
class Probe:
    """How to tell that a component is healthy: ``http`` (a 2xx, or any answer
    below 500 when ``any_status``), ``tcp`` (accepts a connection) or
    ``redis`` (answers PING)."""

    kind: str
    address: str
    any_status: bool = False

    def healthy(self) -> bool:
        try:
            if self.kind == "http":
                return _http_ok(self.address, self.any_status)
            host, port = self.address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=1.0) as sock:
                if self.kind == "redis":
                    sock.sendall(b"PING\r\n")
                    return sock.recv(16).startswith(b"+PONG")
                return True
        except OSError:
            return False


def _http_ok(url: str, any_status: bool) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310  # loopback
            return 200 <= int(response.status) < 300
    except urllib.error.HTTPError as error:
        return any_status and error.code < 500


@dataclass
class Component:
    """One process of the stack, as recorded in ``stack.json``."""

    name: str
    argv: list[str]
    log: str
    probe: Probe
    pid: int = 0
    start_time: str = ""
    stop_signal: int = signal.SIGTERM
    # Seconds between the stop signal and SIGKILL.
    stop_timeout: float = 10.0
    env: dict[str, str] = field(default_factory=dict)
    run_as_uid: int | None = None

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("env")
        return data

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Component:
        fields = dict(data)
        fields["probe"] = Probe(**fields["probe"])
        return cls(**fields)


def _process_start_time(pid: int) -> str:
    """The kernel's start time of ``pid``: with the pid, it names one process
    for good, so a recycled pid is never mistaken for ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def is_running(component: Component) -> bool:
    if component.pid <= 0:
        return False
    current = _process_start_time(component.pid)
    if not current or current != component.start_time:
        return False
    # A zombie has exited: it only waits for its parent to collect it.
    state = Path(f"/proc/{component.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def unprivileged_uid() -> int | None:
    """PostgreSQL refuses to run as root; as root we run it as ``nobody``."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("nobody").pw_uid


def _preexec(run_as_uid: int | None, tie_to_parent: bool) -> Callable[[], None]:
    def setup() -> None:
        if tie_to_parent:
            # If the runner dies (a killed test session), its children die too.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if run_as_uid is not None:
            entry = pwd.getpwuid(run_as_uid)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

    return setup


def start(component: Component, *, tie_to_parent: bool) -> subprocess.Popen[bytes]:
    log = Path(component.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            component.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **component.env},
            start_new_session=True,
            preexec_fn=_preexec(component.run_as_uid, tie_to_parent),
        )
    component.pid = process.pid
    component.start_time = _process_start_time(process.pid)
    return process


def run_once(argv: Sequence[str], *, run_as_uid: int | None = None, what: str) -> None:
    """Runs a set-up command to completion; raises with its output on failure."""
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=_preexec(run_as_uid, tie_to_parent=False),
    )
    if result.returncode != 0:
        raise StackError(f"{what} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def wait_healthy(
    components: Sequence[Component],
    processes: Mapping[str, subprocess.Popen[bytes]],
    timeout: float,
) -> None:
    """Waits until every component's probe passes; fails fast when one exits."""
    pending = {c.name: c for c in components}
    deadline = time.monotonic() + timeout
    while pending:
        for name, component in list(pending.items()):
            process = processes.get(name)
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"{name} exited with code {process.returncode} while starting\n"
                    + log_tail(component)
                )
            if component.probe.healthy():
                del pending[name]
        if not pending:
            return
        if time.monotonic() > deadline:
            name, component = next(iter(pending.items()))
            raise StackError(f"{name} not healthy after {timeout:.0f}s\n" + log_tail(component))
        time.sleep(0.05)


def log_tail(component: Component, lines: int = 30) -> str:
    try:
        text = Path(component.log).read_text(errors="replace")
    except OSError:
        return f"(no log at {component.log})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"--- last {lines} lines of {component.log} ---\n{tail}"


def stop(components: Sequence[Component]) -> None:
    """Signals every running component (its whole process group), waits, and
    kills what is still there after its ``stop_timeout``."""
    alive = [c for c in components if is_running(c)]
    for component in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(component.pid, component.stop_signal)
    started = time.monotonic()
    while alive:
        _reap(alive)
        alive = [c for c in alive if is_running(c)]
        overdue = [c for c in alive if time.monotonic() - started > c.stop_timeout]
        for component in overdue:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(component.pid, signal.SIGKILL)
        if alive:
            time.sleep(0.05)


def _reap(components: Sequence[Component]) -> None:
    """Collects exited children of this process so they do not linger as zombies."""
    for component in components:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(component.pid, os.WNOHANG)

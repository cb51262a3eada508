"""Starting, probing and stopping the stack's processes: only the ones it started."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import resource
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


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


# Probes go straight to loopback, whatever proxy the environment names.
# Loopback requests, never through a proxy the environment names.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_ok(url: str, any_status: bool) -> bool:
    try:
        with OPENER.open(url, timeout=1.0) as response:
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
    # Every port it listens on: checked free before it starts.
    ports: list[int] = field(default_factory=list)
    # What the supervisor (social_stack.supervisor) did: how often it started
    # the component again, how its last run ended (an exit code, or minus the
    # signal that killed it), and until when (epoch seconds) it waits before
    # the next start; 0 when no start is pending.
    restarts: int = 0
    last_exit: int | None = None
    backoff_until: float = 0.0

    def record(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("env")
        return data

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Component:
        # Fields this version does not know are ignored: a stack started by an
        # older or newer checkout must still stop.
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["probe"] = Probe(**values["probe"])
        return cls(**values)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (which, in
    parentheses, may hold spaces): [0] is the state, [1] the parent, [11:15]
    the CPU ticks, [19] the start time; None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _process_stat(pid: int) -> tuple[str, str] | None:
    """The kernel's state letter and start time of ``pid``: with the pid, the
    start time names one process for good, so a recycled pid is never ours."""
    fields = stat_fields(pid)
    return None if fields is None else (fields[0], fields[19])


def is_running(component: Component) -> bool:
    return is_alive(component.pid, component.start_time)


def is_alive(pid: int, start_time: str) -> bool:
    """Whether the process ``pid`` started at ``start_time`` still runs."""
    if pid <= 0:
        return False
    stat = _process_stat(pid)
    # A zombie (Z) has exited: it only waits for its parent to collect it.
    return stat is not None and stat[1] == start_time and stat[0] != "Z"


def start_time_of(pid: int) -> str:
    """The kernel's start time of ``pid`` (with the pid, names it for good)."""
    stat = _process_stat(pid)
    return stat[1] if stat else ""


def exit_text(code: int | None) -> str:
    """How a run ended, for people: ``exit 1``, ``SIGKILL``."""
    if code is None:
        return "-"
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"exit {code}"


def unprivileged_uid() -> int | None:
    """PostgreSQL refuses to run as root; as root we run it as ``nobody``."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("nobody").pw_uid


def _launcher(run_as_uid: int | None, tie_to_parent: bool) -> list[str]:
    """The ``setpriv`` prefix that drops privileges and ties the child's life
    to ours. setpriv sets the death signal after changing user, which the
    kernel would otherwise clear, and needs no code run between fork and exec."""
    prefix = ["setpriv"]
    if run_as_uid is not None:
        entry = pwd.getpwuid(run_as_uid)
        prefix += [f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--clear-groups"]
    if tie_to_parent:
        # If the runner dies (a killed test session), its children die too.
        prefix += ["--pdeathsig", "TERM"]
    return [*prefix, "--"] if len(prefix) > 1 else []


def ensure_ports_free(component: Component) -> None:
    for port in component.ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise StackError(
                    f"{component.name}: port {port} is in use (another stack? `make down`, "
                    "or move it with the STACK_*_PORT settings)"
                ) from None


# Descriptors each started process may hold: every WebSocket costs one in the
# realtime service and two in Envoy (downstream and upstream), so 10,000
# sockets need more than a shell's usual 1,024 (or 20,000).
_OPEN_FILES = 1 << 16


def raise_open_files_limit() -> None:
    """Raises this process's (so its children's) open-files limit to
    65,536, the hard limit too where privileged, else as far as the hard
    limit allows; never lowers it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if hard != infinite and hard < _OPEN_FILES:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, _OPEN_FILES))
            hard = _OPEN_FILES
    if soft != infinite and soft < _OPEN_FILES:
        soft = _OPEN_FILES if hard == infinite else min(_OPEN_FILES, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start(
    component: Component, *, tie_to_parent: bool, again: str | None = None
) -> subprocess.Popen[bytes]:
    """Starts ``component`` with its log written afresh; ``again``: a start
    after the first, whose log is kept and continued after that line. A
    component whose ports its replicas share (``SHARE_PORTS``) finds them in
    use by its siblings then, so they are not checked."""
    if again is None or component.env.get("SHARE_PORTS") != "1":
        ensure_ports_free(component)
    log = Path(component.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb" if again is None else "ab") as out:
        if again is not None:
            out.write(f"\n--- {again} ---\n".encode())
            out.flush()
        process = subprocess.Popen(
            _launcher(component.run_as_uid, tie_to_parent) + component.argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **component.env},
            start_new_session=True,
        )
    component.pid = process.pid
    stat = _process_stat(process.pid)
    component.start_time = stat[1] if stat else ""
    return process


def run_once(
    argv: Sequence[str],
    *,
    run_as_uid: int | None = None,
    env: Mapping[str, str] | None = None,
    what: str,
) -> None:
    """Runs a set-up command to completion (with more environment variables,
    if given); raises with its output on failure."""
    result = subprocess.run(
        _launcher(run_as_uid, tie_to_parent=False) + list(argv),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env} if env else None,
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
    while True:
        for component in components:
            process = processes.get(component.name)
            if process is not None and process.poll() is not None:
                raise StackError(
                    f"{component.name} exited with code {process.returncode} while starting\n"
                    + log_tail(component)
                )
        if not pending:
            return
        for name, component in list(pending.items()):
            if component.probe.healthy():
                del pending[name]
        if not pending:
            # One more pass above: a probe can pass on a port another process holds.
            continue
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

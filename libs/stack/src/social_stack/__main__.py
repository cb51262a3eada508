"""``python -m social_stack``: the local stack's command line (see ``make help``).

run      start everything in the foreground, print the URLs, follow the
         services' logs; Ctrl-C stops it all
up       start everything in the background (under a detached supervisor
         process, ``supervise``); return once all is healthy
down     stop what ``up`` started, and only that
status   one line per component: healthy or not, restarts and last exit
supervise
         (what ``up`` runs, detached) start everything, then restart what
         exits unasked, until SIGTERM; reports the start on --report-fd
health   every component's health and each service's key signals on one screen
render-gateway --target k8s --out DIR
         write the Kubernetes gateway config and OpenAPI document
render-chart
         write the Helm chart's gateway config (deploy/helm/social/files/envoy.yaml)
render-web --dist DIR --served-from DIR --out FILE
         write the web client's static server config for a built bundle (its image)
render-openapi
         write the OpenAPI document (gateway/openapi.yaml) from its source and the
         services' typed bodies
observability [--scrape-interval 5s]
         start Prometheus and Alertmanager on loopback against the running
         stack, in the foreground; print their URLs; Ctrl-C stops them
render-dashboards
         write the Grafana dashboards (deploy/observability/dashboards/*.json)
         and the rules generated from the roster (ServiceAbsent, at the end of
         deploy/observability/prometheus/rules/services.yml)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from social_common.fleet import roster

from social_stack import health, processes
from social_stack.gateway import (
    CHART_ENVOY_YAML,
    helm_config,
    kubernetes_config,
    render_envoy,
    write_gateway,
)
from social_stack.local import (
    BACKING,
    Endpoints,
    Ports,
    Stack,
    load_state,
    load_supervisor,
    stop_recorded,
)
from social_stack.observability import (
    ALERTMANAGER,
    DASHBOARDS_DIR,
    INSTALL_HINT,
    PROMETHEUS,
    Running,
    ToolMissing,
    forget_in_stack,
    record_in_stack,
    start_alertmanager,
    start_prometheus,
    tool,
    write_generated,
)
from social_stack.openapi import DOCUMENT, render_openapi
from social_stack.paths import DEFAULT_RUN_DIR
from social_stack.processes import StackError
from social_stack.web import bundle, kubernetes_web_config, render_web


def _print_urls(endpoints: Endpoints) -> None:
    url = endpoints.gateway_url
    web = f"{url}/  (API reference {url}/api/docs)" if endpoints.web_url else "not built (make web)"
    print(
        f"""
  Web client           {web}
  Gateway (REST API)   {endpoints.gateway_url}/api/v1/
  OpenAPI              {endpoints.gateway_url}/api/v1/openapi.json
  WebSocket            {endpoints.gateway_url.replace("http", "ws", 1)}/ws
  Envoy admin          {endpoints.envoy_admin_url}
  PostgreSQL (admin)   {endpoints.database_admin_url}
  Redis                {endpoints.redis_url}
  S3                   {endpoints.s3_endpoint_url}  bucket {endpoints.s3_bucket}
  Services (HTTP/gRPC) """
        + ", ".join(
            f"{name} {endpoints.services_http[name]}/{endpoints.services_grpc[name]}"
            for name in endpoints.services_http
        )
        + f"\n  Logs                 {endpoints.run_dir}/logs/\n",
        flush=True,
    )


def _already_up(run_dir: Path) -> bool:
    loaded = load_state(run_dir)
    return loaded is not None and any(processes.is_running(c) for c in loaded[1])


def _start(
    run_dir: Path, ports: Ports, replicas: dict[str, int], *, tie_to_parent: bool
) -> Stack | None:
    if _already_up(run_dir):
        print(f"A stack is already running from {run_dir}: `make status`, or `make down` first.")
        return None
    stack = Stack(run_dir, ports, tie_to_parent=tie_to_parent, replicas=replicas)
    started = time.monotonic()
    try:
        stack.start()
    except StackError as error:
        print(f"The stack failed to start: {error}", file=sys.stderr)
        sys.exit(1)
    print(f"Every component is healthy ({time.monotonic() - started:.1f}s).")
    _print_urls(stack.endpoints)
    return stack


class _StopRequested(Exception):
    """SIGTERM, SIGINT or SIGHUP: stop the stack."""


def _stop_on_signals() -> None:
    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        raise _StopRequested

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)


def _ignore_signals() -> None:
    # A second signal must not cut the stop short and leave processes behind.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def cmd_up(run_dir: Path, free_ports: bool, replicas: dict[str, int]) -> None:
    """Starts a detached supervisor (``supervise``), which starts the stack
    and keeps it running after we return; waits for its report on a pipe."""
    if _already_up(run_dir):
        print(f"A stack is already running from {run_dir}: `make status`, or `make down` first.")
        sys.exit(1)
    log = run_dir / "logs" / "supervisor.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "social_stack", "--run-dir", str(run_dir), "supervise"]
    argv += ["--report-fd", str(write_end)]
    argv += ["--free-ports"] if free_ports else []
    if replicas:
        argv += ["--replicas", ",".join(f"{n}={c}" for n, c in replicas.items())]
    with log.open("wb") as out:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(write_end,),
            # Its own session: a Ctrl-C or a closed terminal of ours is not its.
            start_new_session=True,
        )
    os.close(write_end)
    # Its one line, or nothing if it died: EOF either way once it closes the pipe.
    with os.fdopen(read_end) as report:
        outcome = report.read()
    if not outcome.startswith("ok "):
        print(
            f"The stack failed to start: {outcome or 'its supervisor exited'}\n"
            f"(the supervisor's log: {log})",
            file=sys.stderr,
        )
        sys.exit(1)
    loaded = load_state(run_dir)
    assert loaded is not None
    print(f"Every component is healthy ({outcome.split()[1]}s).")
    _print_urls(loaded[0])


def cmd_supervise(
    run_dir: Path, ports: Ports, replicas: dict[str, int], report_fd: int | None
) -> None:
    """Starts the stack, reports the outcome on ``report_fd`` (``ok <seconds>``
    or the error), then restarts what exits unasked until SIGTERM (``make
    down``), and stops it all."""
    report = os.fdopen(report_fd, "w") if report_fd is not None else sys.stdout
    _stop_on_signals()
    stack = Stack(run_dir, ports, tie_to_parent=False, replicas=replicas)
    try:
        started = time.monotonic()
        try:
            stack.start()
        except StackError as error:
            report.write(f"{error}\n")
            sys.exit(1)
        stack.supervise()
        report.write(f"ok {time.monotonic() - started:.1f}\n")
        if report is not sys.stdout:
            report.close()
        print(f"Supervising the stack from {run_dir} (pid {os.getpid()}).", flush=True)
        while True:
            signal.pause()
    except _StopRequested:
        pass
    finally:
        _ignore_signals()
        stack.stop()
    print("Stopped.", flush=True)


def cmd_run(run_dir: Path, ports: Ports, replicas: dict[str, int]) -> None:
    stack = _start(run_dir, ports, replicas, tie_to_parent=True)
    if stack is None:
        sys.exit(1)
    _stop_on_signals()
    try:
        stack.supervise()
        print("Following the services' logs; Ctrl-C stops everything.\n", flush=True)
        _follow_logs(stack)
    except (_StopRequested, KeyboardInterrupt):
        pass
    finally:
        _ignore_signals()
        print("\nStopping the stack…", flush=True)
        stack.stop()
    print("Stopped.")


def _follow_logs(stack: Stack) -> None:
    """Prints the gateway's and services' new log lines, until stopped. A
    component that exits is started again by the supervisor: its log goes on."""
    followed = [c for c in stack.components if c.name not in BACKING]
    offsets = {c.name: 0 for c in followed}
    while True:
        for component in followed:
            offsets[component.name] = _print_new_lines(component, offsets[component.name])
        time.sleep(0.2)


def _print_new_lines(component: processes.Component, offset: int) -> int:
    try:
        with open(component.log, "rb") as log:
            log.seek(offset)
            chunk = log.read()
    except OSError:
        return offset
    complete = chunk.rfind(b"\n") + 1
    for line in chunk[:complete].decode(errors="replace").splitlines():
        print(f"{component.name:>9} | {line}")
    sys.stdout.flush()
    return offset + complete


def cmd_down(run_dir: Path) -> None:
    stopped = stop_recorded(run_dir)
    print(f"Stopped: {', '.join(stopped)}." if stopped else "Nothing was running.")


def cmd_status(run_dir: Path) -> None:
    loaded = load_state(run_dir)
    if loaded is None:
        print("Not running (no stack started with `make up` or `make dev`).")
        sys.exit(1)
    _, components = loaded
    supervisor = load_supervisor(run_dir)
    supervised = supervisor is not None and processes.is_alive(*supervisor)
    all_healthy = True
    for component in components:
        running = processes.is_running(component)
        healthy = running and component.probe.healthy()
        all_healthy &= healthy
        pending = component.backoff_until - time.time()
        if healthy:
            state = "healthy"
        elif running:
            state = "UNHEALTHY"
        elif supervised:
            state = "RESTARTING"
        else:
            state = "NOT RUNNING"
        restarts = f"restarts {component.restarts}"
        if component.last_exit is not None:
            restarts += f" (last: {processes.exit_text(component.last_exit)})"
        if state == "RESTARTING" and pending > 0:
            restarts += f", next start in {pending:.1f}s"
        print(
            f"{component.name:<10} {state:<12} pid {component.pid:<8} {restarts:<28} "
            f"{component.probe.address}"
        )
    if supervisor is None:
        print("supervisor none recorded: what exits stays down")
    else:
        print(
            f"supervisor {'running' if supervised else 'NOT RUNNING':<12} pid {supervisor[0]:<8} "
            + ("restarts what exits" if supervised else "what exits stays down")
        )
    sys.exit(0 if all_healthy else 1)


def cmd_observability(run_dir: Path, scrape_interval: str) -> None:
    """Prometheus and Alertmanager against the stack recorded in ``run_dir``,
    until Ctrl-C (or ``make down``, which stops them with the stack)."""
    try:
        tool(PROMETHEUS)
        tool(ALERTMANAGER)
    except ToolMissing:
        print(INSTALL_HINT, file=sys.stderr)
        sys.exit(1)
    loaded = load_state(run_dir)
    if loaded is None or not any(processes.is_running(c) for c in loaded[1]):
        print(f"No stack is running from {run_dir}: `make up` or `make dev` first.")
        sys.exit(1)
    endpoints, _ = loaded
    work = run_dir / "observability"
    started: list[Running] = []

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, request_stop)
    try:
        started.append(start_alertmanager(work))
        alertmanager = started[0]
        started.append(
            start_prometheus(
                endpoints,
                work,
                scrape_interval=scrape_interval,
                alertmanager_url=alertmanager.url,
            )
        )
        prometheus = started[1]
        record_in_stack(run_dir, [r.component for r in started])
        print(
            f"""
  Prometheus     {prometheus.url}  (see /targets, /alerts)
  Alertmanager   {alertmanager.url}
  Dashboards     {DASHBOARDS_DIR}/*.json: import them into Grafana with
                 {prometheus.url} as a Prometheus data source
  Logs           {work}/logs/

Ctrl-C stops both.""",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while all(r.process.poll() is None for r in started):
                time.sleep(0.5)
            for r in started:
                if r.process.returncode is not None:
                    print(f"{r.component.name} exited with code {r.process.returncode}.")
    except StackError as error:
        print(f"Observability failed to start: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Both at once: one stop timeout at most, not one each.
        processes.stop([r.component for r in started])
        forget_in_stack(run_dir, [r.component for r in started])
    print("Stopped.")


def cmd_health(run_dir: Path) -> None:
    loaded = load_state(run_dir)
    if loaded is None:
        print("Not running (no stack started with `make up` or `make dev`).")
        sys.exit(1)
    screen, healthy = health.report(*loaded)
    print(screen)
    sys.exit(0 if healthy else 1)


def _replicas(text: str) -> dict[str, int]:
    replicas: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        name, _, count = item.partition("=")
        if name not in roster().services or not count.isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: expected SERVICE=N with N >= 1")
        replicas[name] = int(count)
    return replicas


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m social_stack")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "up"):
        starter = sub.add_parser(name)
        starter.add_argument(
            "--free-ports",
            action="store_true",
            help="use ports the kernel hands out instead of the documented ones",
        )
        starter.add_argument(
            "--replicas",
            type=_replicas,
            default={},
            metavar="SERVICE=N[,SERVICE=N]",
            help="run N processes of a service on its ports, as N pods would be (posts=2)",
        )
    supervise = sub.add_parser("supervise")
    supervise.add_argument("--free-ports", action="store_true")
    supervise.add_argument("--replicas", type=_replicas, default={})
    supervise.add_argument("--report-fd", type=int, default=None)
    for name in ("down", "status", "health"):
        sub.add_parser(name)
    render = sub.add_parser("render-gateway")
    render.add_argument("--target", choices=["k8s"], required=True)
    render.add_argument("--namespace", default="social")
    render.add_argument("--out", type=Path, required=True)
    render.add_argument(
        "--xff-trusted-hops",
        type=int,
        default=0,
        help="load balancers in front of Envoy that append the client to X-Forwarded-For",
    )
    sub.add_parser("render-chart")
    sub.add_parser("render-openapi")
    observe = sub.add_parser("observability")
    observe.add_argument(
        "--scrape-interval", default="5s", help="how often Prometheus scrapes (1s to 5s)"
    )
    sub.add_parser("render-dashboards")
    web = sub.add_parser("render-web")
    web.add_argument("--dist", type=Path, required=True, help="the built bundle")
    web.add_argument("--served-from", type=Path, required=True, help="where the image keeps it")
    web.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    run_dir = args.run_dir.resolve()
    if args.command == "render-gateway":
        config = kubernetes_config(args.namespace, xff_trusted_hops=args.xff_trusted_hops)
        print(write_gateway(config, args.out))
        return
    if args.command == "render-chart":
        CHART_ENVOY_YAML.write_text(render_envoy(helm_config()))
        print(CHART_ENVOY_YAML)
        return
    if args.command == "render-web":
        files = bundle(args.dist, args.served_from)
        args.out.write_text(render_web(kubernetes_web_config(), files))
        print(args.out)
        return
    if args.command == "render-openapi":
        DOCUMENT.write_text(render_openapi())
        print(DOCUMENT)
        return
    if args.command == "render-dashboards":
        for path in write_generated():
            print(path)
        return
    if args.command == "observability":
        cmd_observability(run_dir, args.scrape_interval)
        return
    if args.command == "up":
        cmd_up(run_dir, args.free_ports, args.replicas)
    elif args.command in ("run", "supervise"):
        ports = Ports.free() if args.free_ports else Ports.dev()
        if args.command == "run":
            cmd_run(run_dir, ports, args.replicas)
        else:
            cmd_supervise(run_dir, ports, args.replicas, args.report_fd)
    else:
        {"down": cmd_down, "status": cmd_status, "health": cmd_health}[args.command](run_dir)


if __name__ == "__main__":
    main()

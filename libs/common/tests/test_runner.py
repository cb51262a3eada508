"""The runner's lifecycle, on a real process: SIGTERM drains what is in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from social_stack.local import Endpoints, Ports
from social_stack.testing import answers, wait_until


def _refused(url: str) -> bool:
    """True when a new request is not served: the connection is refused, or
    (caught in the backlog as the listener closed) closed or reset unanswered."""
    try:
        httpx.get(url, timeout=1)
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        return True
    return False


def _in_flight(base: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("http_requests_in_flight "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture
def slow_service(stack: Endpoints) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    http_port, grpc_port = Ports.free().services["auth"]
    env = {
        **os.environ,
        "HTTP_PORT": str(http_port),
        "GRPC_PORT": str(grpc_port),
        "REDIS_URL": stack.redis_url,
        "SHUTDOWN_DELAY_SECONDS": "0.5",
        "SHUTDOWN_GRACE_SECONDS": "10",
    }
    script = Path(__file__).with_name("slow_service.py")
    process = subprocess.Popen([sys.executable, str(script)], env=env)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(answers(f"{base}/readyz", 200))
        yield process, base, f"127.0.0.1:{grpc_port}"
    finally:
        process.kill()
        process.wait()


def test_sigterm_drains_an_in_flight_request(
    slow_service: tuple[subprocess.Popen[bytes], str, str],
) -> None:
    process, base, grpc_address = slow_service
    responses: list[httpx.Response] = []
    client = threading.Thread(
        target=lambda: responses.append(httpx.get(f"{base}/slow?seconds=2", timeout=15))
    )
    client.start()
    # The gauge counts the /metrics request reading it too: 2 means /slow is in flight.
    wait_until(lambda: _in_flight(base) == 2.0)

    process.send_signal(signal.SIGTERM)

    # First, during the delay: not ready for new traffic, on REST and gRPC health.
    wait_until(answers(f"{base}/readyz", 503))
    with grpc.insecure_channel(grpc_address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub gap
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    # Then the listener closes while /slow is still being served...
    wait_until(lambda: _refused(f"{base}/healthz"))
    assert client.is_alive()
    # ...and the request already in flight completes.
    client.join(timeout=15)
    assert [(r.status_code, r.text) for r in responses] == [(200, "finished")]
    assert process.wait(timeout=15) == 0


def _start_slow_service(
    stack: Endpoints, http_port: int, grpc_port: int, *, share: bool
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HTTP_PORT": str(http_port),
        "GRPC_PORT": str(grpc_port),
        "REDIS_URL": stack.redis_url,
        "SHARE_PORTS": "1" if share else "0",
    }
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("slow_service.py"))],
        env=env,
        stderr=subprocess.DEVNULL,
    )


def _start_time(base: str) -> str:
    # A new connection each time: the kernel picks a process per connection.
    metrics = httpx.get(f"{base}/metrics", timeout=5, trust_env=False).text
    return next(line for line in metrics.splitlines() if line.startswith("process_start_time"))


def test_replicas_share_ports_only_when_told(stack: Endpoints) -> None:
    http_port, grpc_port = Ports.free().services["auth"]
    base = f"http://127.0.0.1:{http_port}"
    replicas = [_start_slow_service(stack, http_port, grpc_port, share=True)]
    try:
        wait_until(answers(f"{base}/readyz", 200))
        # Started once the first answers: the two start times differ.
        replicas.append(_start_slow_service(stack, http_port, grpc_port, share=True))
        seen: set[str] = set()

        def both_answered() -> bool:
            seen.add(_start_time(base))
            return len(seen) == 2

        wait_until(both_answered, what="both replicas answering on the one port")
        # A process not told to share cannot take the port.
        intruder = _start_slow_service(stack, http_port, grpc_port, share=False)
        assert intruder.wait(timeout=30) != 0
    finally:
        for process in replicas:
            process.kill()
            process.wait()


def test_a_failed_background_task_drains_the_service_and_exits_non_zero(
    slow_service: tuple[subprocess.Popen[bytes], str, str],
) -> None:
    process, base, _ = slow_service
    assert httpx.post(f"{base}/break").text == "breaking"
    # Drained like a SIGTERM (not ready first), not left serving without it...
    wait_until(answers(f"{base}/readyz", 503))
    # ...and it exits with a failure, for its supervisor to start it again.
    assert process.wait(timeout=15) == 1

"""Fixtures of the shared runtime's tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from social_stack.local import Ports
from social_stack.paths import redis_server_binary
from social_stack.processes import Component, Probe, start, stop, wait_healthy


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[Component, dict[str, subprocess.Popen[bytes]]]]:
    """A Redis of this test's own (restarting the stack's would disturb the others)."""
    port = Ports.free().redis
    component = Component(
        name="redis",
        argv=[redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port), "--save", ""],
        log=str(tmp_path / "redis.log"),
        probe=Probe("redis", f"127.0.0.1:{port}"),
        ports=[port],
    )
    running = {"redis": start(component, tie_to_parent=True)}
    try:
        wait_healthy([component], running, timeout=30)
        yield component, running
    finally:
        stop([component])

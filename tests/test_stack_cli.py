"""`make up`, `make status` and `make down`, through the stack's command line."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from social_common.fleet import roster
from social_stack import redis_cluster
from social_stack.local import redis_cluster_asked
from social_stack.testing import stack_cli


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli")
    # PostgreSQL may run as another user (nobody, when we are root).
    for directory in (path, *path.parents):
        if directory == Path("/tmp"):
            break
        directory.chmod(directory.stat().st_mode | 0o011)
    return path


def test_up_status_down_leave_nothing_behind(run_dir: Path) -> None:
    up = stack_cli(run_dir, "up", "--free-ports")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Every component is healthy" in up.stdout
        state = json.loads((run_dir / "stack.json").read_text())
        pids = [c["pid"] for c in state["components"]]
        ports = [
            int(c["probe"]["address"].split(":")[-1].split("/")[0]) for c in state["components"]
        ]
        # PostgreSQL, Redis (one server or a cluster's nodes), SeaweedFS, the
        # services, Envoy, and the web client's server where a build of it exists.
        redis_nodes = redis_cluster.NODES if redis_cluster_asked(os.environ) else 1
        components = (
            2 + redis_nodes + len(roster().names) + 1 + (1 if state["endpoints"]["web_url"] else 0)
        )
        assert len(pids) == components

        status = stack_cli(run_dir, "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("healthy") == components

        again = stack_cli(run_dir, "up", "--free-ports")
        assert again.returncode != 0
        assert "already running" in again.stdout
    finally:
        down = stack_cli(run_dir, "down")
    assert down.returncode == 0
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    assert [port for port in ports if _listening(port)] == []
    assert stack_cli(run_dir, "status").returncode == 1
    assert "Nothing was running" in stack_cli(run_dir, "down").stdout

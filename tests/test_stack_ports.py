"""The stack's safety: ports held by others, state files of other versions."""

from __future__ import annotations

import json
import socket
from dataclasses import fields
from pathlib import Path

import pytest
from social_stack.local import Endpoints, Ports, load_state, stop_recorded
from social_stack.processes import Component, Probe, StackError, ensure_ports_free
from social_stack.redis_cluster import bus_port


def test_a_port_in_use_is_refused_before_anything_starts() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        component = Component(
            name="redis",
            argv=["redis-server"],
            log="/dev/null",
            probe=Probe("redis", f"127.0.0.1:{port}"),
            ports=[port],
        )
        with pytest.raises(StackError, match=f"port {port} is in use"):
            ensure_ports_free(component)


def test_a_state_file_from_another_version_still_loads(tmp_path: Path) -> None:
    # `make down` must stop a stack that an older or newer checkout started.
    state = {
        "endpoints": {
            **{f.name: "" for f in fields(Endpoints)},
            "database_urls": {},
            "services_http": {},
            "services_grpc": {},
            "a_field_from_another_version": "x",
        },
        "components": [
            {
                "name": "redis",
                "argv": ["redis-server"],
                "log": "/dev/null",
                "probe": {"kind": "redis", "address": "127.0.0.1:1"},
                "pid": 0,
                "start_time": "",
                "another_unknown_field": 1,
            }
        ],
    }
    (tmp_path / "stack.json").write_text(json.dumps(state))
    loaded = load_state(tmp_path)
    assert loaded is not None
    assert [c.name for c in loaded[1]] == ["redis"]
    assert stop_recorded(tmp_path) == []


def test_every_cluster_node_of_the_dev_stack_has_a_bus_port_of_its_own() -> None:
    # Redis puts a node's cluster bus at its port + 10,000: past 65,535 for
    # the dev ports (63799 on), where a node would refuse to start; and not
    # among the ephemeral ports, which a connection's source port may hold.
    ports = Ports.dev()
    taken = {
        *(getattr(ports, f.name) for f in fields(ports) if isinstance(getattr(ports, f.name), int)),
        *ports.redis_cluster_nodes,
        *(port for pair in ports.services.values() for port in pair),
    }
    buses = [bus_port(port) for port in ports.redis_cluster_nodes]
    _, last = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert all(last < bus <= 65_535 for bus in buses)
    assert len(set(buses)) == len(buses)
    assert not set(buses) & taken

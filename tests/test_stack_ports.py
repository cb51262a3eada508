"""The stack refuses to start a component whose port another process holds."""

from __future__ import annotations

import socket

import pytest
from social_common.stack.processes import Component, Probe, StackError, ensure_ports_free


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

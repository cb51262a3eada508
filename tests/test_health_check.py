"""`make health-check`: one screen of every component's health and each
service's key signals, read from the running stack itself."""

from __future__ import annotations

import math
import re

import httpx
from social_common.fleet import roster
from social_stack.health import quantile, report
from social_stack.local import Stack
from social_stack.testing import wait_until


def _gateway_sees_every_upstream_healthy(admin_url: str) -> bool:
    flags = [
        line.rsplit("::", 1)[1]
        for line in httpx.get(f"{admin_url}/clusters").text.splitlines()
        if "::health_flags::" in line
    ]
    return bool(flags) and all(flag == "healthy" for flag in flags)


def test_the_screen_names_every_component_and_service_with_its_figures(
    stack_runner: Stack,
) -> None:
    endpoints = stack_runner.endpoints
    for _ in range(5):
        httpx.get(f"{endpoints.gateway_url}/api/v1/posts")
    # Envoy checks each upstream every second: once it has seen them all.
    wait_until(
        lambda: _gateway_sees_every_upstream_healthy(endpoints.envoy_admin_url),
        what="the gateway's health checks of every upstream",
    )
    screen, healthy = report(endpoints, stack_runner.components)
    assert healthy, screen
    lines = screen.splitlines()
    for component in stack_runner.components:
        assert any(line.split()[:2] == [component.name, "healthy"] for line in lines), screen
    rows = {line.split()[0]: line.split() for line in lines if line.split()}
    for name in roster().names:
        assert rows[name][1] != "unreachable", screen
    posts = rows["posts"]
    assert int(posts[1].replace(",", "")) >= 5  # requests so far
    # A share (earlier tests of the session may have made posts fail on purpose).
    assert re.fullmatch(r"\d+\.\d%", posts[2]), posts
    assert posts[3].isdigit()  # a p95, in ms
    assert any(line.startswith("gateway: ") for line in lines), screen
    assert "upstreams without a healthy host: none" in screen


def test_the_quantile_interpolates_as_prometheus_does() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 0.4: 100.0, math.inf: 100.0}
    assert quantile(buckets, 0.5) == 0.1
    assert quantile(buckets, 0.7) == 0.15000000000000002
    assert quantile({math.inf: 0.0}, 0.95) is None
    assert quantile({0.1: 0.0, math.inf: 10.0}, 0.95) == 0.1  # all past the last bound

"""The release's smoke test (social_stack.smoke) against the running fleet."""

from __future__ import annotations

import pytest
from social_common.fleet import roster
from social_stack import smoke
from social_stack.local import Endpoints, free_ports


def test_the_smoke_test_passes_on_a_healthy_fleet(
    stack: Endpoints, capsys: pytest.CaptureFixture[str]
) -> None:
    assert stack.web_url, "web/dist holds no build of the web client: `make web`"
    assert smoke.main([stack.gateway_url, "--wait", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [f"/api/v1/{name}/healthz" for name in roster().services] + ["/"]
    assert [line.split()[1] for line in lines] == expected
    assert all(line.startswith("ok") for line in lines)


def test_a_route_that_fails_fails_the_check(stack: Endpoints) -> None:
    missing = smoke.Check("/api/v1/posts/no-such-route/healthz", "application/json")
    assert missing.failure(stack.gateway_url, timeout=5) == "answered 404"
    html_expected = smoke.Check("/api/v1/posts/healthz", "text/html")
    failure = html_expected.failure(stack.gateway_url, timeout=5)
    assert failure == "answered application/json, not text/html"


def test_an_unreachable_gateway_fails_the_smoke_test(capsys: pytest.CaptureFixture[str]) -> None:
    (port,) = free_ports(1)
    assert smoke.main([f"http://127.0.0.1:{port}", "--wait", "0"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(roster().services) + 1
    assert all(line.startswith("FAIL") and "unreachable" in line for line in lines)

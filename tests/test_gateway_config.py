"""Every rendered gateway config is one Envoy accepts (`envoy --mode validate`)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from social_common.fleet import roster
from social_common.rest import PLATFORM_PATHS
from social_stack.gateway import (
    CHART_ENVOY_YAML,
    GatewayConfig,
    Upstream,
    dev_config,
    helm_config,
    kubernetes_config,
    render_envoy,
    write_gateway,
)
from social_stack.paths import binary
from social_stack.testing import wire_offline


def _dev(tmp_path: Path) -> GatewayConfig:
    ports = {name: service.ports.http for name, service in roster().services.items()}
    return dev_config(
        8000, 9901, ports, tmp_path / "openapi.json", objects=Upstream("127.0.0.1", 8333)
    )


def _k8s(tmp_path: Path) -> GatewayConfig:
    # Validation reads the OpenAPI document, so point it at the rendered copy.
    return replace(kubernetes_config("social"), openapi_path=str(tmp_path / "openapi.json"))


@pytest.mark.parametrize("make_config", [_dev, _k8s], ids=["dev", "k8s"])
def test_rendered_config_validates(make_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    envoy_yaml = write_gateway(make_config(tmp_path), tmp_path)
    result = subprocess.run(
        [binary("envoy"), "--mode", "validate", "-c", str(envoy_yaml), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_bench_ceiling_route_exists_in_dev_only(tmp_path: Path) -> None:
    assert "/__bench/ceiling" in render_envoy(_dev(tmp_path))
    assert "/__bench/ceiling" not in render_envoy(_k8s(tmp_path))
    # What the chart ships (its test renders it with Helm).
    assert "/__bench/" not in CHART_ENVOY_YAML.read_text()


def test_kubernetes_config_targets_service_dns_and_keeps_admin_private(tmp_path: Path) -> None:
    config = yaml.safe_load(render_envoy(kubernetes_config("prod")))
    addresses = {
        cluster["name"]: cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
            "address"
        ]["socket_address"]["address"]
        for cluster in config["static_resources"]["clusters"]
    }
    assert addresses["posts"] == "posts-headless.prod.svc.cluster.local"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_trusted_proxy_hops_are_a_setting(tmp_path: Path) -> None:
    def hops(rendered: str) -> int:
        listener = yaml.safe_load(rendered)["static_resources"]["listeners"][0]
        return int(
            listener["filter_chains"][0]["filters"][0]["typed_config"]["xff_num_trusted_hops"]
        )

    assert hops(render_envoy(_dev(tmp_path))) == 0
    assert hops(render_envoy(kubernetes_config("prod", xff_trusted_hops=1))) == 1


def _matches(match: dict[str, Any], path: str) -> bool:
    """Envoy's route match for the kinds the template uses, on a path without a query."""
    if "headers" in match:
        return False  # method-restricted routes (the bucket's) are not what these tests ask
    if "path" in match:
        return bool(path == match["path"])
    if "prefix" in match:
        return path.startswith(match["prefix"])
    if "path_separated_prefix" in match:
        prefix = match["path_separated_prefix"]
        return path == prefix or path.startswith(prefix + "/")
    if "safe_regex" in match:
        return re.fullmatch(match["safe_regex"]["regex"], path) is not None
    raise AssertionError(f"unknown match {match!r}")


def _first_match(entries: list[dict[str, Any]], path: str) -> dict[str, Any]:
    return next(entry for entry in entries if _matches(entry["match"], path))


def _http_filters(rendered: str) -> dict[str, Any]:
    listener = yaml.safe_load(rendered)["static_resources"]["listeners"][0]
    manager: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return manager


def _served_paths() -> list[tuple[str, str]]:
    """Every path a service serves (its path parameters filled in), with the service."""

    async def wired() -> list[tuple[str, str]]:
        found = []
        for name in roster().names:
            for route in (await wire_offline(name)).routes:
                path = getattr(route, "path", "")
                if path not in PLATFORM_PATHS:
                    found.append((re.sub(r"\{[^}]+\}", "p0", path), name))
        return found

    return asyncio.run(wired())


@pytest.mark.parametrize("make_config", [_dev, _k8s], ids=["dev", "k8s"])
def test_routes_send_every_served_path_to_the_service_that_serves_it(
    make_config: Callable[[Path], GatewayConfig], tmp_path: Path
) -> None:
    config = _http_filters(render_envoy(make_config(tmp_path)))
    routes = config["route_config"]["virtual_hosts"][0]["routes"]
    served = _served_paths()
    assert {service for _, service in served} == set(roster().names)
    misrouted = [
        (path, service, _first_match(routes, path).get("route", {}).get("cluster"))
        for path, service in served
        if _first_match(routes, path).get("route", {}).get("cluster") != service
    ]
    assert misrouted == [], "(path, served by, routed to)"


@pytest.mark.parametrize(
    ("path", "requirement"),
    [
        ("/api/v1/feed", "required"),
        ("/api/v1/posts", "optional"),
        ("/api/v1/users/alice/posts", "optional"),
        ("/api/v1/users/alice/follow", "required"),
        ("/api/v1/users/login", "none"),
    ],
)
def test_token_rules(path: str, requirement: str, tmp_path: Path) -> None:
    filters = _http_filters(render_envoy(_dev(tmp_path)))["http_filters"]
    jwt = next(f for f in filters if f["name"] == "envoy.filters.http.jwt_authn")
    rule = _first_match(jwt["typed_config"]["rules"], path)
    found = (
        "none"
        if "requires" not in rule
        else "required"
        if rule["requires"] == {"provider_name": "auth"}
        else "optional"
    )
    assert found == requirement


def test_the_charts_gateway_config_is_rendered_from_the_current_template_and_roster() -> None:
    assert CHART_ENVOY_YAML.read_text() == render_envoy(helm_config()), "stale: run `make chart`"

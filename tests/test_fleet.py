"""The fleet through Envoy: every service reachable, healthy, observable."""

from __future__ import annotations

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from social_common.fleet import roster
from social_stack.gateway import openapi_document
from social_stack.local import Endpoints


@pytest.mark.parametrize("service", roster().names)
def test_a_request_through_envoy_reaches_each_service(stack: Endpoints, service: str) -> None:
    response = httpx.get(f"{stack.gateway_url}/api/v1/{service}/healthz")
    assert response.status_code == 200
    # The body names the service that answered: the route reached the right one.
    # It says no more than that publicly; /readyz inside has the details.
    assert response.json() == {"service": service, "status": "ready"}


def test_the_gateway_issues_request_ids_and_ignores_the_clients(stack: Endpoints) -> None:
    response = httpx.get(
        f"{stack.gateway_url}/api/v1/auth/healthz", headers={"x-request-id": "forged"}
    )
    request_id = response.headers["x-request-id"]
    assert request_id
    assert request_id != "forged"


def test_unknown_paths_get_a_problem_from_the_gateway(stack: Endpoints) -> None:
    # Under /api/: other paths are the web client's pages (test_web_serving.py).
    response = httpx.get(f"{stack.gateway_url}/api/v1/no/such/thing")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


def test_the_gateway_serves_the_openapi_document(stack: Endpoints) -> None:
    response = httpx.get(f"{stack.gateway_url}/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == openapi_document()


@pytest.mark.parametrize("service", roster().names)
def test_each_service_answers_grpc_health_and_reflection(stack: Endpoints, service: str) -> None:
    with grpc.insecure_channel(stack.services_grpc[service]) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]  # stub gap
            health_pb2.HealthCheckRequest(service=""), timeout=2
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(  # type: ignore[operator]  # stub gap
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=2
        )
        listed = {s.name for reply in replies for s in reply.list_services_response.service}
    assert "grpc.health.v1.Health" in listed


def _health_requests_counted(stack: Endpoints, service: str) -> float:
    metrics = httpx.get(f"http://{stack.services_http[service]}/metrics").text
    series = f'http_requests_total{{method="GET",route="/api/v1/{service}/healthz",status="200"}} '
    for line in metrics.splitlines():
        if line.startswith(series):
            return float(line.removeprefix(series))
    return 0.0


@pytest.mark.parametrize("service", roster().names)
def test_each_service_counts_requests_by_route(stack: Endpoints, service: str) -> None:
    before = _health_requests_counted(stack, service)
    for _ in range(3):
        httpx.get(f"{stack.gateway_url}/api/v1/{service}/healthz")
    assert _health_requests_counted(stack, service) == before + 3


def test_platform_routes_are_not_exposed_through_the_gateway(stack: Endpoints) -> None:
    for path in ("/metrics", "/readyz", "/healthz"):
        response = httpx.get(f"{stack.gateway_url}{path}")
        # No route (404), or the web client's page for a path it does not know.
        assert response.status_code == 404 or response.headers["content-type"].startswith(
            "text/html"
        ), path


def _realtime_requests(stack: Endpoints) -> int:
    stats = httpx.get(
        f"{stack.envoy_admin_url}/stats",
        params={"filter": r"^cluster\.realtime\.upstream_rq_total$"},
    ).text
    return int(stats.split(":")[1]) if ":" in stats else 0


def test_websocket_upgrades_are_routed_to_realtime(stack: Endpoints) -> None:
    before = _realtime_requests(stack)
    response = httpx.get(
        f"{stack.gateway_url}/ws",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    # Envoy adds this header only to responses that came from an upstream.
    # realtime has no WebSocket endpoint yet and refuses the handshake itself.
    assert response.status_code == 403
    assert _realtime_requests(stack) == before + 1


@pytest.mark.parametrize("service", roster().names)
def test_each_service_reports_how_saturated_it_is(stack: Endpoints, service: str) -> None:
    exposition = httpx.get(f"http://{stack.services_http[service]}/metrics").text
    expected = ["redis_pool_max_connections", 'redis_pool_connections{state="in_use"}']
    expected.append("event_loop_lag_seconds_count")
    if roster().services[service].database:
        expected += ["db_pool_max_connections", "db_pool_requests_waiting"]
    if service == "media":
        expected += ["media_queue_capacity", "media_queue_in_use"]
    assert [name for name in expected if name not in exposition] == []

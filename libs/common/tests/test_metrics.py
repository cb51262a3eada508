"""RED metrics of HTTP requests: labelled by route template (one series for
everything unmatched), with the status sent, errors included; /metrics serves them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
from prometheus_client import REGISTRY
from social_common.errors import Problem
from social_common.metrics import HTTP_IN_FLIGHT, UNMATCHED_ROUTE
from social_common.rest import Readiness, build_app, json_response
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _requests(method: str, route: str, status: str) -> float:
    labels = {"method": method, "route": route, "status": status}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def _timed(method: str, route: str) -> float:
    labels = {"method": method, "route": route}
    return REGISTRY.get_sample_value("http_request_duration_seconds_count", labels) or 0.0


class Demo:
    """An app with routes under a prefix of this test's own (the metrics are process-wide)."""

    def __init__(self) -> None:
        self.prefix = f"/t{uuid.uuid4().hex[:10]}"
        self.in_flight_seen: list[float] = []

    async def item(self, request: Request) -> Response:
        self.in_flight_seen.append(HTTP_IN_FLIGHT._value.get())
        if request.path_params["id"] == "missing":
            raise Problem(404, "not_found", "No such item.")
        if request.path_params["id"] == "bug":
            raise RuntimeError("a bug")
        return json_response({"id": request.path_params["id"]})

    def run(self, scenario: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
        app = build_app(
            "demo",
            [Route(self.prefix + "/items/{id}", self.item, methods=["GET"])],
            Readiness("demo", {}),
        )

        async def main() -> None:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
                await scenario(http)

        asyncio.run(main())


def test_requests_are_counted_by_route_template_method_and_status() -> None:
    demo = Demo()
    template = demo.prefix + "/items/{id}"

    async def scenario(http: httpx.AsyncClient) -> None:
        for item in ("a", "b", "c", "missing"):
            await http.get(f"{demo.prefix}/items/{item}")

    demo.run(scenario)
    assert _requests("GET", template, "200") == 3
    assert _requests("GET", template, "404") == 1
    assert _timed("GET", template) == 4
    # Never the raw path.
    assert _requests("GET", demo.prefix + "/items/a", "200") == 0


def test_an_unhandled_error_is_counted_as_the_500_the_client_got() -> None:
    demo = Demo()
    template = demo.prefix + "/items/{id}"
    statuses: list[int] = []

    async def scenario(http: httpx.AsyncClient) -> None:
        statuses.append((await http.get(f"{demo.prefix}/items/bug")).status_code)

    before = HTTP_IN_FLIGHT._value.get()
    demo.run(scenario)
    assert statuses == [500]
    assert _requests("GET", template, "500") == 1
    assert _timed("GET", template) == 1
    # The request in flight was counted while handled, and no longer is.
    assert demo.in_flight_seen == [before + 1]
    assert HTTP_IN_FLIGHT._value.get() == before


def test_a_wrong_method_is_counted_under_the_route_it_matched_by_path() -> None:
    demo = Demo()
    template = demo.prefix + "/items/{id}"
    statuses: list[int] = []

    async def scenario(http: httpx.AsyncClient) -> None:
        statuses.append((await http.delete(f"{demo.prefix}/items/a")).status_code)

    demo.run(scenario)
    assert statuses == [405]
    assert _requests("DELETE", template, "405") == 1


def test_unmatched_paths_share_one_series() -> None:
    demo = Demo()
    before = _requests("GET", UNMATCHED_ROUTE, "404")

    async def scenario(http: httpx.AsyncClient) -> None:
        for n in range(25):
            assert (await http.get(f"{demo.prefix}/scan/{n}")).status_code == 404

    demo.run(scenario)
    assert _requests("GET", UNMATCHED_ROUTE, "404") == before + 25
    routes = {
        sample.labels["route"]
        for metric in REGISTRY.collect()
        if metric.name == "http_requests"
        for sample in metric.samples
    }
    assert not any(route.startswith(demo.prefix + "/scan") for route in routes)


def test_the_metrics_endpoint_serves_the_counts_in_the_exposition_format() -> None:
    demo = Demo()
    pages: list[httpx.Response] = []

    async def scenario(http: httpx.AsyncClient) -> None:
        await http.get(f"{demo.prefix}/items/x")
        pages.append(await http.get("/metrics"))

    demo.run(scenario)
    [page] = pages
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain; version=")
    line = (
        f'http_requests_total{{method="GET",route="{demo.prefix}/items/{{id}}",status="200"}} 1.0'
    )
    assert line in page.text.splitlines()
    assert "# TYPE http_request_duration_seconds histogram" in page.text
    assert "# TYPE grpc_server_handled_total counter" in page.text


def test_platform_routes_are_counted_too() -> None:
    before = _requests("GET", "/healthz", "200")

    async def scenario(http: httpx.AsyncClient) -> None:
        assert (await http.get("/healthz")).json() == {"status": "alive"}

    Demo().run(scenario)
    assert _requests("GET", "/healthz", "200") == before + 1

"""Prometheus RED metrics: rate, errors and duration per route and per RPC.

HTTP metrics are labelled with the route template (``/api/v1/posts/{id}``),
never the raw path, so a scan of random URLs cannot blow up cardinality.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from social_common.logging import bind_request_context

# Latency buckets for an in-datacentre service: 1 ms to 10 s.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds", "HTTP request latency", ["method", "route"], buckets=_BUCKETS
)
HTTP_IN_FLIGHT = Gauge("http_requests_in_flight", "HTTP requests being handled")
GRPC_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed by the server", ["method", "code"]
)
GRPC_DURATION = Histogram(
    "grpc_server_handling_seconds", "RPC latency on the server", ["method"], buckets=_BUCKETS
)

# Label for requests that matched no route: one series for all of them.
UNMATCHED_ROUTE = "<unmatched>"


def _route_label(scope: Scope) -> str:
    # Starlette's router records the route it matched (fully, or by path only
    # for a 405); nothing recorded means no route matched.
    route = scope.get("route")
    return route.path if isinstance(route, Route) else UNMATCHED_ROUTE


class RequestMiddleware:
    """Binds the request id to the log context and records RED metrics.

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware costs a task and a
    queue per request, which the hot read path cannot afford.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id")
        # (uvicorn runs each request in a fresh context: nothing to clear first.)
        if request_id:
            bind_request_context(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        HTTP_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            HTTP_IN_FLIGHT.dec()
            route = _route_label(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def metrics_endpoint(_request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

"""The Starlette app every service serves: its public routes plus the platform's
``/healthz`` (alive), ``/readyz`` (dependencies reachable), ``/metrics`` and a
public ``/api/v1/<service>/healthz`` the gateway routes to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from social_common.errors import install_problem_handlers
from social_common.logging import get_logger
from social_common.metrics import RequestMiddleware, metrics_endpoint

log = get_logger(__name__)

Check = Callable[[], Awaitable[None]]

# Routes every service serves for the platform; not part of the public API.
PLATFORM_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def json_response(body: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status_code, media_type="application/json")


class Readiness:
    """Answers /readyz: ready while every dependency answers and the service
    is not draining for shutdown.

    The dependency checks run at most once per ``cache_seconds``, however many
    requests ask (load balancers, and the public health route, which must not
    turn into a way to load the database); draining shows at once.
    """

    def __init__(
        self,
        service: str,
        checks: Mapping[str, Check],
        timeout: float = 2.0,
        cache_seconds: float = 1.0,
    ) -> None:
        self.service = service
        self.checks = dict(checks)
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.draining = False
        self._last: tuple[float, dict[str, str]] | None = None
        self._running: asyncio.Task[dict[str, str]] | None = None

    async def _run_checks(self) -> dict[str, str]:
        names = list(self.checks)
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(self.checks[name](), self.timeout) for name in names),
            return_exceptions=True,
        )
        results: dict[str, str] = {}
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                results[name] = f"failing: {type(outcome).__name__}: {outcome}".strip(": ")
            else:
                results[name] = "ok"
        self._last = (time.monotonic(), results)
        return results

    async def report(self) -> tuple[bool, dict[str, str]]:
        if self._last is not None and time.monotonic() - self._last[0] < self.cache_seconds:
            results = self._last[1]
        else:
            if self._running is None or self._running.done():
                self._running = asyncio.create_task(self._run_checks())
            results = await asyncio.shield(self._running)
        ready = not self.draining and all(v == "ok" for v in results.values())
        return ready, results

    async def endpoint(self, _request: Request) -> Response:
        ready, checks = await self.report()
        status = "draining" if self.draining else ("ready" if ready else "not_ready")
        body = {"service": self.service, "status": status, "checks": checks}
        return json_response(body, 200 if ready else 503)


async def _alive(_request: Request) -> Response:
    return json_response({"status": "alive"})


def build_app(service: str, routes: Sequence[BaseRoute], readiness: Readiness) -> Starlette:
    app = Starlette(
        routes=[
            Route("/healthz", _alive, methods=["GET"]),
            Route("/readyz", readiness.endpoint, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(f"/api/v1/{service}/healthz", readiness.endpoint, methods=["GET"]),
            *routes,
        ],
        middleware=[Middleware(RequestMiddleware)],
    )
    install_problem_handlers(app)
    return app

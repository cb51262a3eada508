"""The Starlette app every service serves: its public routes plus the platform's
``/healthz`` (alive), ``/readyz`` (dependencies reachable), ``/metrics`` and a
public ``/api/v1/<service>/healthz`` the gateway routes to."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Literal, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from social_common.errors import Problem, ProblemDocument, install_problem_handlers
from social_common.ids import parse_uuid
from social_common.logging import get_logger
from social_common.metrics import RequestMiddleware, metrics_endpoint
from social_common.models import Body, View, encode

log = get_logger(__name__)

Check = Callable[[], Awaitable[None]]

# Routes every service serves for the platform; not part of the public API.
PLATFORM_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


# Larger JSON bodies are refused before they are read: no route needs more.
MAX_JSON_BODY = 64 * 1024


def json_response(
    body: object, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """``body`` (a view, see social_common.models, or plain data) as JSON."""
    return Response(
        encode(body), status_code=status_code, media_type="application/json", headers=headers
    )


B = TypeVar("B", bound=Body)

# How a msgspec type is named to clients: "Expected `str`, got `int`" reads
# "must be a string".
_TYPE_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "array": "a list",
    "object": "an object",
    "uuid": "a UUID",
}
_EXPECTED = re.compile(r"Expected `(?P<type>[^`]+)`, got `[^`]+`")
_AT_FIELD = re.compile(r" - at `\$\.(?P<field>[^`.\[]+)")


def decode_body(raw: bytes, kind: type[B]) -> B:
    """``raw`` as a ``kind``, or a problem: 400 for JSON that is not, 422 with
    one entry per offending field for anything else: unknown (or read-only)
    fields, missing ones, NUL characters (PostgreSQL text cannot hold them,
    and no field of ours has a use for them), else a value of the wrong type.
    A valid body is decoded once; only a refused one is read again, to name
    every field at fault."""
    try:
        body = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise _refused(raw, kind, str(exc)) from None
    except msgspec.DecodeError:
        raise Problem(400, "invalid_json", "The body is not valid JSON.") from None
    for name in body.__struct_fields__:
        value = getattr(body, name)
        if isinstance(value, str) and "\x00" in value:
            raise _refused(raw, kind, "")
    return body


def _refused(raw: bytes, kind: type[Body], type_error: str) -> Problem:
    """The problem of a body ``kind`` refused: its unknown, missing and
    NUL-bearing fields, or else the one msgspec named (``type_error``)."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError:  # a typed decode stops at a wrong type before bad JSON (`2x`)
        return Problem(400, "invalid_json", "The body is not valid JSON.")
    if not isinstance(body, dict):
        return Problem(422, "validation_failed", "The body must be a JSON object.")
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    known = {field.encode_name for field in info.fields}
    errors = [_error(name, "unknown or read-only field") for name in body if name not in known]
    errors += [
        _error(field.encode_name, "required")
        for field in info.fields
        if field.required and field.encode_name not in body
    ]
    errors += [
        _error(name, "must not contain NUL characters")
        for name, value in body.items()
        if isinstance(value, str) and "\x00" in value
    ]
    return Problem(
        422,
        "validation_failed",
        "The body has invalid fields.",
        errors=errors or [_type_error(type_error)],
    )


def _error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def _type_error(text: str) -> dict[str, str]:
    """The entry of msgspec's "Expected `str`, got `int` - at `$.caption`"."""
    at = _AT_FIELD.search(text)
    expected = _EXPECTED.match(text)
    message = text.split(" - at ")[0]
    if expected is not None and expected["type"] in _TYPE_NAMES:
        message = f"must be {_TYPE_NAMES[expected['type']]}"
    return _error(at["field"] if at else "", message)


async def read_model(request: Request, kind: type[B]) -> B:
    """The request's JSON body as a ``kind`` (see :func:`decode_body`)."""
    return decode_body(await read_json_body(request), kind)


async def read_json_body(request: Request) -> bytes:
    """The body of a request that must be JSON, unparsed: 415 for another
    type, 413 past ``MAX_JSON_BODY``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Problem(415, "unsupported_media_type", "Send the body as application/json.")
    return await read_body(request, MAX_JSON_BODY)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes
    (by its declared length, or while it streams in), never held whole beyond it."""
    too_large = Problem(413, "body_too_large", f"The body is over {limit} bytes.")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise too_large
    return bytes(raw)


def etag_of(body: bytes) -> str:
    """A strong validator of a response body."""
    return '"' + hashlib.sha1(body, usedforsecurity=False).hexdigest()[:24] + '"'


def conditional_json(
    request: Request,
    body: bytes,
    etag: str,
    headers: Mapping[str, str] | None = None,
    *,
    shared_seconds: int = 0,
) -> Response:
    """A JSON response with its ``ETag``, or ``304 Not Modified`` when the
    client's ``If-None-Match`` already names it. Browsers revalidate every
    time. Responses may depend on who asks, hence ``Vary: Authorization``,
    but for the gateway's cache to keep one (``shared_seconds``, as
    s-maxage): it keeps only what it asked without a token, takes no Vary,
    and adds this one for the caches after it (gateway/envoy.yaml.j2)."""
    cache_control = {"Cache-Control": "no-cache", "Vary": "Authorization"}
    if shared_seconds:
        cache_control = {"Cache-Control": f"public, max-age=0, s-maxage={shared_seconds}"}
    all_headers = {"ETag": etag, **cache_control, **(headers or {})}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=all_headers)
    return Response(body, media_type="application/json", headers=all_headers)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weakly, RFC 9110)."""
    if if_none_match is None:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in tags or "*" in tags


def client_ip(request: Request) -> str:
    """The client's address as the gateway saw the connection: the edge Envoy
    appends it to X-Forwarded-For, so the last entry is its word (entries a
    client sent stand before it). Without the header, the peer's address."""
    forwarded = request.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.rsplit(",", 1)[-1].strip()
    return request.client.host if request.client else "unknown"


HealthStatus = Literal["ready", "not_ready", "draining"]


class Health(View):
    service: str
    status: HealthStatus


# The platform's bodies the OpenAPI document describes (make openapi).
SCHEMAS = (ProblemDocument, Health)


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
        """/readyz, for the gateway and the orchestrator: with each check's outcome."""
        ready, checks = await self.report()
        body = {"service": self.service, "status": self._status(ready), "checks": checks}
        return json_response(body, 200 if ready else 503)

    async def public_endpoint(self, _request: Request) -> Response:
        """The public health route: the verdict only, no internal addresses."""
        ready, _ = await self.report()
        return json_response(Health(self.service, self._status(ready)), 200 if ready else 503)

    def _status(self, ready: bool) -> HealthStatus:
        return "draining" if self.draining else ("ready" if ready else "not_ready")


async def _alive(_request: Request) -> Response:
    return json_response({"status": "alive"})


def build_app(
    service: str,
    routes: Sequence[BaseRoute],
    readiness: Readiness,
    middleware: Sequence[Callable[[ASGIApp], ASGIApp]] = (),
) -> Starlette:
    app = Starlette(
        routes=[
            Route("/healthz", _alive, methods=["GET"]),
            Route("/readyz", readiness.endpoint, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route(f"/api/v1/{service}/healthz", readiness.public_endpoint, methods=["GET"]),
            *routes,
        ],
        middleware=[Middleware(RequestMiddleware), *(Middleware(m) for m in middleware)],
    )
    install_problem_handlers(app)
    return app


def path_uuid(request: Request, name: str, missing: Problem) -> uuid.UUID:
    """The path parameter ``name`` as a UUID; raises ``missing`` (a 404)
    when it is none, since nothing can have such an id."""
    value = parse_uuid(request.path_params[name])
    if value is None:
        raise missing
    return value

"""RFC 9457 problem details: every error a service answers is problem+json.

Raise :class:`Problem` (or one of its helpers) anywhere in a handler; the
handlers installed by :func:`install_problem_handlers` turn it, Starlette's
HTTP errors and anything unexpected into a problem document that carries the
request id and never a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Annotated

import grpc
import psycopg
import psycopg_pool
import redis.exceptions
from msgspec import UNSET, Meta, UnsetType
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from social_common.logging import get_logger
from social_common.models import View, encode

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "https://social.example/problems/"

log = get_logger(__name__)


class FieldError(View):
    field: str
    message: str


class ProblemDocument(View):
    """RFC 9457 problem details."""

    type: Annotated[str, Meta(extra_json_schema={"format": "uri"})]
    title: str
    status: int
    code: str
    detail: str | UnsetType = UNSET
    request_id: str | UnsetType = UNSET
    errors: list[FieldError] | UnsetType = UNSET


class Problem(Exception):
    """An error the client should see, as an RFC 9457 problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str | None = None,
        *,
        title: str | None = None,
        errors: Sequence[Mapping[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail or code)
        self.status = status
        self.code = code
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.errors = list(errors or [])
        self.headers = dict(headers or {})

    def document(self, request_id: str | None) -> ProblemDocument:
        return ProblemDocument(
            type=_TYPE_BASE + self.code,
            title=self.title,
            status=self.status,
            code=self.code,
            detail=self.detail or UNSET,
            request_id=request_id or UNSET,
            errors=[FieldError(e["field"], e["message"]) for e in self.errors] or UNSET,
        )


def problem_response(problem: Problem, request_id: str | None) -> Response:
    return Response(
        encode(problem.document(request_id)),
        status_code=problem.status,
        media_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )


def _request_id(request: Request) -> str | None:
    return request.headers.get("x-request-id")


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return problem_response(exc, _request_id(request))


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def _on_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    problem = Problem(
        exc.status_code,
        _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}"),
        headers=exc.headers,
    )
    return problem_response(problem, _request_id(request))


async def _on_unavailable(request: Request, exc: Exception) -> Response:
    # A dependency is down or saturated: the client may retry, the request was fine.
    log.warning("dependency_unavailable", path=request.url.path, error=repr(exc))
    problem = Problem(
        503,
        "unavailable",
        "A dependency is unavailable; retry shortly.",
        headers={"Retry-After": "2"},
    )
    return problem_response(problem, _request_id(request))


# Failures of PostgreSQL and Redis that say nothing about the request itself.
UNAVAILABLE: tuple[type[Exception], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


# A peer's answers that say it is down or saturated, not that the request was wrong.
PEER_UNAVAILABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


async def _on_rpc_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, grpc.aio.AioRpcError)
    if exc.code() in PEER_UNAVAILABLE:
        return await _on_unavailable(request, exc)
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    problem = Problem(500, "internal_error", "The server failed to handle this request.")
    return problem_response(problem, _request_id(request))


def install_problem_handlers(app: Starlette) -> None:
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(HTTPException, _on_http_exception)
    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, _on_unavailable)
    app.add_exception_handler(grpc.aio.AioRpcError, _on_rpc_error)
    app.add_exception_handler(Exception, _on_unexpected)

"""The shared REST plumbing: bounded bodies, JSON content type, ETags and 304s,
the client's address, UUID path parameters, and /readyz over real dependencies."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx
import msgspec
import pytest
from psycopg_pool import AsyncConnectionPool
from social_common.db import check_database, create_pool
from social_common.errors import PROBLEM_CONTENT_TYPE, Problem
from social_common.redis import check_redis, create_redis
from social_common.rest import (
    MAX_JSON_BODY,
    Readiness,
    build_app,
    client_ip,
    conditional_json,
    etag_matches,
    etag_of,
    json_response,
    path_uuid,
    read_body,
    read_json_body,
)
from social_stack.local import Endpoints
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


def _serve(
    routes: Sequence[BaseRoute],
    scenario: Scenario,
    readiness: Readiness | None = None,
    client: tuple[str, int] = ("127.0.0.1", 123),
) -> None:
    app = build_app("demo", routes, readiness or Readiness("demo", {}))

    async def main() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            await scenario(http)

    asyncio.run(main())


def _problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json()["code"] == code


# -- bodies -------------------------------------------------------------------

LIMIT = 32


async def _echo(request: Request) -> Response:
    body = await read_body(request, LIMIT)
    return Response(body, media_type="application/octet-stream")


async def _echo_json(request: Request) -> Response:
    return Response(await read_json_body(request), media_type="application/json")


BODY_ROUTES = [
    Route("/echo", _echo, methods=["POST"]),
    Route("/json", _echo_json, methods=["POST"]),
]


class Chunks:
    """A streamed request body (no Content-Length) that counts what was pulled from it."""

    def __init__(self, size: int, count: int) -> None:
        self.size, self.count, self.pulled = size, count, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for n in range(self.count):
            self.pulled += 1
            yield bytes([65 + n % 26]) * self.size


def test_a_body_up_to_the_limit_is_read_whole() -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        exact = await http.post("/echo", content=b"x" * LIMIT)
        assert (exact.status_code, exact.content) == (200, b"x" * LIMIT)
        streamed = await http.post("/echo", content=Chunks(8, 4))
        assert (streamed.status_code, streamed.content) == (
            200,
            b"A" * 8 + b"B" * 8 + b"C" * 8 + b"D" * 8,
        )
        assert (await http.post("/echo", content=b"")).content == b""

    _serve(BODY_ROUTES, scenario)


def test_a_declared_length_over_the_limit_is_a_413_before_any_of_it_is_read() -> None:
    body = Chunks(8, 1000)

    async def scenario(http: httpx.AsyncClient) -> None:
        response = await http.post("/echo", content=body, headers={"content-length": "8000"})
        _problem(response, 413, "body_too_large")
        assert response.json()["detail"] == f"The body is over {LIMIT} bytes."

    _serve(BODY_ROUTES, scenario)
    assert body.pulled == 0


def test_a_streamed_body_is_refused_once_past_the_limit_not_read_to_its_end() -> None:
    body = Chunks(8, 1000)

    async def scenario(http: httpx.AsyncClient) -> None:
        _problem(await http.post("/echo", content=body), 413, "body_too_large")

    _serve(BODY_ROUTES, scenario)
    # 32 bytes fit in four chunks; the fifth passes the limit and reading stops.
    assert body.pulled == 5


def test_one_byte_over_the_limit_is_refused() -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        _problem(await http.post("/echo", content=b"x" * (LIMIT + 1)), 413, "body_too_large")

    _serve(BODY_ROUTES, scenario)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ;x=y",
    ],
)
def test_a_json_body_is_read_when_sent_as_json(content_type: str) -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        response = await http.post(
            "/json", content=b'{"a": 1}', headers={"content-type": content_type}
        )
        assert (response.status_code, response.content) == (200, b'{"a": 1}')

    _serve(BODY_ROUTES, scenario)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json-patch+json",
        "json",
    ],
)
def test_a_body_of_another_type_is_a_415(content_type: str | None) -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        headers = {"content-type": content_type} if content_type else {}
        response = await http.post("/json", content=b'{"a": 1}', headers=headers)
        _problem(response, 415, "unsupported_media_type")

    _serve(BODY_ROUTES, scenario)


def test_a_json_body_past_the_json_limit_is_a_413() -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        json_headers = {"content-type": "application/json"}
        fits = b'"' + b"x" * (MAX_JSON_BODY - 2) + b'"'
        assert (await http.post("/json", content=fits, headers=json_headers)).status_code == 200
        too_big = b'"' + b"x" * (MAX_JSON_BODY - 1) + b'"'
        _problem(
            await http.post("/json", content=too_big, headers=json_headers), 413, "body_too_large"
        )

    _serve(BODY_ROUTES, scenario)


# -- ETags ----------------------------------------------------------------------


def test_etag_of_is_a_quoted_strong_validator_of_the_bytes() -> None:
    tag = etag_of(b'{"a":1}')
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert len(tag) == 26
    assert all(c in "0123456789abcdef" for c in tag[1:-1])
    assert etag_of(b'{"a":1}') == tag
    assert etag_of(b'{"a":2}') != tag
    assert etag_of(b"") != etag_of(b" ")


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),  # weak comparison (RFC 9110 13.1.2)
        ('"x", "abc"', True),
        ('"x",W/"abc" , "y"', True),
        ("*", True),
        ('"x", *', True),
        ('"abcd"', False),
        ('"ab"', False),
        ("abc", False),  # unquoted: not the same entity tag
        ('"ABC"', False),  # entity tags are case-sensitive
        ('"x", "y"', False),
    ],
)
def test_if_none_match_names_the_tag(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"abc"') is matches


async def _document(request: Request) -> Response:
    body = msgspec.json.encode({"id": 1, "name": "ann"})
    return conditional_json(request, body, etag_of(body), {"Link": '</next>; rel="next"'})


def test_conditional_json_sends_the_body_with_its_tag_then_304_to_a_client_that_has_it() -> None:
    body = msgspec.json.encode({"id": 1, "name": "ann"})

    async def scenario(http: httpx.AsyncClient) -> None:
        first = await http.get("/doc")
        assert first.status_code == 200
        assert first.content == body
        assert first.headers["content-type"] == "application/json"
        assert first.headers["etag"] == etag_of(body)
        assert first.headers["cache-control"] == "no-cache"
        assert first.headers["vary"] == "Authorization"
        assert first.headers["link"] == '</next>; rel="next"'

        again = await http.get("/doc", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["vary"] == "Authorization"
        assert again.headers["link"] == '</next>; rel="next"'

        weak = await http.get("/doc", headers={"if-none-match": "W/" + first.headers["etag"]})
        assert weak.status_code == 304

        stale = await http.get("/doc", headers={"if-none-match": etag_of(b"older")})
        assert (stale.status_code, stale.content) == (200, body)

    _serve([Route("/doc", _document)], scenario)


def test_a_page_for_shared_caches_has_their_lifetime_and_no_vary() -> None:
    async def shared(request: Request) -> Response:
        return conditional_json(request, b"{}", etag_of(b"{}"), shared_seconds=3)

    async def scenario(http: httpx.AsyncClient) -> None:
        page = await http.get("/shared")
        # Browsers revalidate; the gateway, which adds the Vary, keeps it 3 s.
        assert page.headers["cache-control"] == "public, max-age=0, s-maxage=3"
        assert "vary" not in page.headers
        again = await http.get("/shared", headers={"if-none-match": page.headers["etag"]})
        assert again.status_code == 304

    _serve([Route("/shared", shared)], scenario)


# -- the client's address ---------------------------------------------------------


async def _whoami(request: Request) -> Response:
    return json_response({"ip": client_ip(request)})


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        (None, "198.51.100.7"),
        ("203.0.113.5", "203.0.113.5"),
        # A client may send its own header: the entry the edge appended comes last.
        ("6.6.6.6, 203.0.113.5", "203.0.113.5"),
        ("6.6.6.6,203.0.113.5 ", "203.0.113.5"),
        ("1.1.1.1, 2.2.2.2, 2001:db8::1", "2001:db8::1"),
        ("", "198.51.100.7"),
    ],
)
def test_client_ip_is_what_the_edge_saw(forwarded: str | None, expected: str) -> None:
    async def scenario(http: httpx.AsyncClient) -> None:
        headers = {"x-forwarded-for": forwarded} if forwarded is not None else {}
        assert (await http.get("/whoami", headers=headers)).json() == {"ip": expected}

    _serve([Route("/whoami", _whoami)], scenario, client=("198.51.100.7", 40000))


# -- path parameters ----------------------------------------------------------------

NO_SUCH_THING = Problem(404, "thing_not_found", "No such thing.")


async def _thing(request: Request) -> Response:
    return json_response({"id": str(path_uuid(request, "thing_id", NO_SUCH_THING))})


def test_path_uuid_reads_the_parameter_or_raises_the_given_problem() -> None:
    thing = uuid.uuid4()

    async def scenario(http: httpx.AsyncClient) -> None:
        assert (await http.get(f"/things/{thing}")).json() == {"id": str(thing)}
        assert (await http.get(f"/things/{str(thing).upper()}")).json() == {"id": str(thing)}
        for wrong in ("nope", "12345", str(thing)[:-1]):
            _problem(await http.get(f"/things/{wrong}"), 404, "thing_not_found")

    _serve([Route("/things/{thing_id}", _thing)], scenario)


# -- readiness over real PostgreSQL and Redis ----------------------------------------


def _closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _open_pool(url: str) -> AsyncConnectionPool:
    pool = create_pool(url, min_size=1, max_size=2, name="test-readiness")
    await pool.open(wait=True, timeout=10)
    return pool


def _get_all(paths: Sequence[str], readiness: Readiness) -> list[httpx.Response]:
    answers: list[httpx.Response] = []

    async def scenario(http: httpx.AsyncClient) -> None:
        answers.extend([await http.get(path) for path in paths])

    _serve([], scenario, readiness)
    return answers


def _ask_readiness(stack: Endpoints, redis_url: str) -> list[tuple[int, Any]]:
    """/readyz and the public health route of an app whose checks are the
    stack's PostgreSQL and the Redis at ``redis_url``."""

    async def main() -> list[tuple[int, Any]]:
        pool = await _open_pool(stack.database_urls["posts"])
        redis = create_redis(redis_url)
        try:
            readiness = Readiness(
                "demo",
                {"postgres": lambda: check_database(pool), "redis": lambda: check_redis(redis)},
            )
            app = build_app("demo", [], readiness)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
                return [
                    ((r := await http.get(path)).status_code, r.json())
                    for path in ("/readyz", "/api/v1/demo/healthz")
                ]
        finally:
            await redis.aclose()
            await pool.close()

    return asyncio.run(main())


def test_readyz_is_ready_when_postgres_and_redis_answer(stack: Endpoints) -> None:
    readyz, public = _ask_readiness(stack, stack.redis_url)
    assert readyz == (
        200,
        {"service": "demo", "status": "ready", "checks": {"postgres": "ok", "redis": "ok"}},
    )
    assert public == (200, {"service": "demo", "status": "ready"})


def test_readyz_names_the_dependency_that_does_not_answer(stack: Endpoints) -> None:
    down = f"redis://127.0.0.1:{_closed_port()}/0"

    (status, body), (public_status, public) = _ask_readiness(stack, down)
    assert status == 503
    assert body["status"] == "not_ready"
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["postgres"] == "ok"
    assert checks["redis"].startswith("failing: ConnectionError")
    # The public route gives the verdict only: no internal addresses.
    assert (public_status, public) == (503, {"service": "demo", "status": "not_ready"})


def test_a_check_that_hangs_fails_after_the_timeout() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async def ok() -> None:
        return None

    readiness = Readiness("demo", {"slow": hangs, "fast": ok}, timeout=0.05)
    [readyz] = _get_all(["/readyz"], readiness)
    assert readyz.status_code == 503
    assert readyz.json()["checks"] == {"slow": "failing: TimeoutError", "fast": "ok"}


def test_a_recovered_dependency_shows_once_the_cached_outcome_expires() -> None:
    up = False

    async def flaky() -> None:
        if not up:
            raise ConnectionRefusedError("refused")

    async def main() -> list[bool]:
        readiness = Readiness("demo", {"dep": flaky}, cache_seconds=0)
        nonlocal up
        first, _ = await readiness.report()
        up = True
        second, _ = await readiness.report()
        return [first, second]

    assert asyncio.run(main()) == [False, True]


def test_a_draining_service_says_so_on_both_routes() -> None:
    readiness = Readiness("demo", {})
    readiness.draining = True
    readyz, public, alive = _get_all(["/readyz", "/api/v1/demo/healthz", "/healthz"], readiness)
    assert (readyz.status_code, readyz.json()["status"]) == (503, "draining")
    assert (public.status_code, public.json()) == (503, {"service": "demo", "status": "draining"})
    # Still alive: draining is no reason to be restarted.
    assert (alive.status_code, alive.json()) == (200, {"status": "alive"})

"""JSON logging: one object a line on stdout, each with the service, the level,
a UTC timestamp and, while a request is handled, its request id; the standard
library's loggers write the same lines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from social_common.logging import (
    bind_request_context,
    clear_request_context,
    configure_logging,
    get_logger,
)
from social_common.rest import Readiness, build_app, json_response
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    uvicorn = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
        for name in ("uvicorn", "uvicorn.error")
    }
    access_disabled = logging.getLogger("uvicorn.access").disabled
    try:
        yield
    finally:
        clear_request_context()
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, (kept, propagate) in uvicorn.items():
            logging.getLogger(name).handlers[:] = kept
            logging.getLogger(name).propagate = propagate
        logging.getLogger("uvicorn.access").disabled = access_disabled


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = capsys.readouterr().out
    # Every line is one JSON object: nothing else is written.
    return [msgspec.json.decode(line) for line in out.splitlines()]


def test_a_line_is_one_json_object_with_service_level_and_utc_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("posts")
    get_logger("test.logging").info("post_created", post_id="p1", count=3)
    [line] = _lines(capsys)
    assert line["event"] == "post_created"
    assert line["service"] == "posts"
    assert line["level"] == "info"
    assert (line["post_id"], line["count"]) == ("p1", 3)
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs((datetime.now(stamp.tzinfo) - stamp).total_seconds()) < 60


def test_bound_request_context_shows_on_every_line_until_cleared(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("messages")
    log = get_logger("test.logging")
    bind_request_context(request_id="req-42")
    log.info("first")
    logging.getLogger("test.stdlib").warning("from the standard library")
    clear_request_context()
    log.info("after")
    first, stdlib, after = _lines(capsys)
    assert first["request_id"] == "req-42"
    assert stdlib["request_id"] == "req-42"
    assert "request_id" not in after


def test_standard_library_loggers_write_the_same_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("auth")
    logging.getLogger("some.library").warning("pool %s exhausted", "db")
    [line] = _lines(capsys)
    assert line["event"] == "pool db exhausted"
    assert line["service"] == "auth"
    assert line["level"] == "warning"
    assert "timestamp" in line


def test_the_level_filters_both_kinds_of_logger(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("media", "warning")
    log = get_logger("test.logging")
    log.info("dropped")
    logging.getLogger("some.library").info("dropped too")
    log.warning("kept")
    logging.getLogger("some.library").error("kept too")
    assert [line["event"] for line in _lines(capsys)] == ["kept", "kept too"]


def test_an_unknown_level_name_means_info(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("media", "chatty")
    log = get_logger("test.logging")
    log.debug("dropped")
    log.info("kept")
    assert [line["event"] for line in _lines(capsys)] == ["kept"]


def _write_to_a_burning_disk() -> None:
    raise RuntimeError("disk on fire")


def test_an_exception_is_rendered_into_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("posts")
    try:
        _write_to_a_burning_disk()
    except RuntimeError:
        get_logger("test.logging").exception("write_failed")
    [line] = _lines(capsys)
    assert line["event"] == "write_failed"
    assert line["level"] == "error"
    assert "RuntimeError: disk on fire" in line["exception"]
    assert "Traceback" in line["exception"]


def test_a_line_that_names_a_service_keeps_it(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("posts")
    get_logger("test.logging").info("peer_down", service="auth")
    get_logger("test.logging").info("own")
    about_peer, own = _lines(capsys)
    assert (about_peer["service"], own["service"]) == ("auth", "posts")


def test_the_access_log_is_left_to_the_gateway() -> None:
    configure_logging("posts")
    assert logging.getLogger("uvicorn.access").disabled
    assert logging.getLogger("uvicorn").handlers == []
    assert logging.getLogger("uvicorn.error").propagate


def test_lines_written_while_handling_a_request_carry_its_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = get_logger("test.logging.route")

    async def hello(request: Request) -> Response:
        log.info("said_hello", to=request.query_params["to"])
        return json_response({"ok": True})

    async def main() -> None:
        app = build_app("demo", [Route("/hello", hello)], Readiness("demo", {}))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as http:
            # Each request in a task of its own, with a context of its own, as uvicorn runs it.
            for sent in (
                http.get("/hello?to=ann", headers={"x-request-id": "req-ann"}),
                http.get("/hello?to=bob"),
            ):
                response = await asyncio.create_task(sent)
                assert response.status_code == 200

    configure_logging("demo")
    asyncio.run(main())
    lines = [line for line in _lines(capsys) if line["event"] == "said_hello"]
    assert [(line["to"], line.get("request_id")) for line in lines] == [
        ("ann", "req-ann"),
        ("bob", None),
    ]
    assert {line["service"] for line in lines} == {"demo"}


def test_a_line_written_in_a_traced_span_names_the_trace_and_the_span(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("messages")
    log = get_logger("test.logging")
    # A provider of its own: the process-wide one stays the no-op.
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("send") as span:
        log.info("message_sent")
    log.info("after")
    traced, untraced = _lines(capsys)
    context = span.get_span_context()
    assert traced["trace_id"] == format(context.trace_id, "032x")
    assert traced["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in untraced

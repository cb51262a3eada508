"""Traces: with an OTLP endpoint set, a message sent over REST is one trace,
started by the gateway, through the messages service's request, its gRPC
call to posts, its PostgreSQL statements, the event it wrote, realtime's
handling of that event and the WebSocket frame that delivered it. A small
OTLP/HTTP receiver in the test collects what Envoy and the services export."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from social_stack.local import Endpoints, Ports, Stack
from social_stack.otlp import Receiver, Span
from social_stack.testing import client, create_account, create_post, wait_until
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def traced(stack: Endpoints) -> Iterator[tuple[Endpoints, Path, Receiver]]:
    """A second stack, with its own PostgreSQL and Redis (so no process of the
    session stack relays or consumes its events) and the session's S3,
    exporting its spans to a receiver here; returns its endpoints, its
    run directory and the receiver."""
    with Receiver() as receiver:
        yield from _traced_stack(stack, receiver)


def _traced_stack(
    stack: Endpoints, receiver: Receiver
) -> Iterator[tuple[Endpoints, Path, Receiver]]:
    external = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        # Export within a fifth of a second rather than five.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "S3_ENDPOINT_URL": stack.s3_endpoint_url,
        "S3_ACCESS_KEY_ID": stack.s3_access_key,
        "S3_SECRET_ACCESS_KEY": stack.s3_secret_key,
    }
    run_dir = Path(tempfile.mkdtemp(prefix="social-traced-"))
    second = Stack(run_dir, Ports.free(), tie_to_parent=True, durable=False, external=external)
    try:
        yield second.start(), run_dir, receiver
    finally:
        second.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_a_message_is_one_trace_from_the_gateway_to_the_websocket_frame(
    traced: tuple[Endpoints, Path, Receiver],
) -> None:
    endpoints, run_dir, receiver = traced
    author = create_account(endpoints.gateway_url)
    post = create_post(endpoints.gateway_url, author)
    ws_url = endpoints.gateway_url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers=author.auth, open_timeout=10) as ws:
        channel = f"post:{post['id']}"
        ws.send(json.dumps({"op": "subscribe", "channel": channel}))
        assert json.loads(ws.recv(timeout=10))["op"] == "ack"
        with client(endpoints.gateway_url) as http:
            sent = http.post(
                f"/api/v1/posts/{post['id']}/messages",
                headers=author.auth,
                json={"message": "hi"},
            )
        assert sent.status_code == 201, sent.text
        frame = json.loads(ws.recv(timeout=10))
    assert (frame["channel"], frame["data"]["message_id"]) == (channel, sent.json()["id"])

    def request_span() -> Span | None:
        return next(
            (
                s
                for s in receiver.spans
                if s.service == "messages"
                and s.kind == SpanMessage.SPAN_KIND_SERVER
                and s.name == "POST /api/v1/posts/{post_id}/messages"
            ),
            None,
        )

    wait_until(lambda: request_span() is not None, what="the messages request's span")
    request = request_span()
    assert request is not None
    assert request.attributes["http.response.status_code"] == "201"

    def in_trace() -> list[Span]:
        return [s for s in receiver.spans if s.trace_id == request.trace_id]

    def delivered() -> bool:
        return any(s.service == "realtime" and s.name == "websocket send" for s in in_trace())

    def started() -> bool:
        # Envoy sends its spans every 5 s (or 5 spans).
        return any(not s.parent_id for s in in_trace())

    wait_until(delivered, what="realtime's span of the frame, in the same trace")
    wait_until(started, what="the gateway's span of the request")
    spans = in_trace()
    by_id = {s.span_id: s for s in spans}

    def parent(span: Span) -> Span:
        return by_id[span.parent_id]

    def one(service: str, name: str) -> Span:
        (span,) = [s for s in spans if s.service == service and name in s.name]
        return span

    # The gateway started the trace: the one root, with the messages
    # request under its upstream span.
    (root,) = [s for s in spans if not s.parent_id]
    assert (root.service, root.kind) == ("gateway", SpanMessage.SPAN_KIND_SERVER)
    assert parent(request).service == "gateway"
    # The gRPC call to posts, as messages made it and as posts served it.
    served = one("posts", "PostsService")
    assert (parent(served).service, parent(served).kind) == (
        "messages",
        SpanMessage.SPAN_KIND_CLIENT,
    )
    statements = [s for s in spans if s.service == "messages" and "db.system" in s.attributes]
    assert statements, [(s.service, s.name) for s in spans]
    # The event: realtime's consumer span continues the request that wrote
    # it, and the socket's write of the frame continues the consumer's.
    consumed = one("realtime", "process message.created")
    assert consumed.kind == SpanMessage.SPAN_KIND_CONSUMER
    assert consumed.parent_id == request.span_id or parent(consumed).service == "messages"
    sent_frame = one("realtime", "websocket send")
    assert sent_frame.attributes["realtime.event_id"] == frame["id"]
    ancestor = sent_frame
    while ancestor.parent_id:
        ancestor = parent(ancestor)
        if ancestor is consumed:
            break
    assert ancestor is consumed
    # Every span descends from the gateway's.
    for span in spans:
        top = span
        while top.parent_id:
            top = parent(top)
        assert top is root, (span.service, span.name)

    # The gateway's access log line of the request names the trace.
    def logged() -> bool:
        lines = (run_dir / "logs" / "envoy.log").read_text().splitlines()
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return any(
            (e.get("trace_id"), e["method"], e["status"]) == (request.trace_id, "POST", 201)
            for e in entries
        )

    # (Envoy writes its log file every 10 s.)
    wait_until(logged, timeout=30, what="the gateway's access log line with the trace id")

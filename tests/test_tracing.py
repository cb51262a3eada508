"""Traces: with an OTLP endpoint set, a message sent over REST is one trace
from the messages service's request through its gRPC call to posts (and
posts' own span of it) and its PostgreSQL statements. A small OTLP/HTTP
receiver in the test collects what the services export."""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from social_common.fleet import roster
from social_stack.local import Endpoints, Ports, Stack
from social_stack.testing import client, create_account, create_post, wait_until


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP (protobuf) trace receiver on loopback."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # the http.server API
        request = ExportTraceServiceRequest.FromString(
            self.rfile.read(int(self.headers["Content-Length"]))
        )
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.server.spans.extend(
                    Span(
                        service=resource["service.name"],
                        name=span.name,
                        kind=span.kind,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        attributes={
                            a.key: a.value.string_value or str(a.value.int_value)
                            for a in span.attributes
                        },
                    )
                    for span in scope_spans.spans
                )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def traced(stack: Endpoints) -> Iterator[tuple[Endpoints, Receiver]]:
    """A second set of the services and a gateway, on the session stack's
    PostgreSQL, Redis and S3, exporting their spans to a receiver here."""
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    tracing = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        # Export within a fifth of a second rather than five.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    external = {
        "DATABASE_URL": stack.database_admin_url,
        "REDIS_URL": stack.redis_url,
        "S3_ENDPOINT_URL": stack.s3_endpoint_url,
        "S3_ACCESS_KEY_ID": stack.s3_access_key,
        "S3_SECRET_ACCESS_KEY": stack.s3_secret_key,
    }
    run_dir = Path(tempfile.mkdtemp(prefix="social-traced-"))
    second = Stack(
        run_dir,
        Ports.free(),
        tie_to_parent=True,
        durable=False,
        external=external,
        service_env={
            name: {
                **tracing,
                # Its posts stay in the shared database: their images must
                # be served where the session stack's pages may load them.
                **(
                    {"MEDIA_PUBLIC_BASE_URL": f"{stack.gateway_url}/media"}
                    if name == "media"
                    else {}
                ),
            }
            for name in roster().names
        },
    )
    try:
        yield second.start(), receiver
    finally:
        second.stop()
        receiver.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_a_message_is_one_trace_through_messages_posts_and_postgres(
    traced: tuple[Endpoints, Receiver],
) -> None:
    endpoints, receiver = traced
    author = create_account(endpoints.gateway_url)
    post = create_post(endpoints.gateway_url, author)
    with client(endpoints.gateway_url) as http:
        sent = http.post(
            f"/api/v1/posts/{post['id']}/messages", headers=author.auth, json={"message": "hi"}
        )
    assert sent.status_code == 201, sent.text

    def request_span() -> Span | None:
        return next(
            (
                s
                for s in receiver.spans
                if s.service == "messages"
                and s.kind == SpanMessage.SPAN_KIND_SERVER
                and s.attributes.get("http.route", s.name).endswith("/messages")
                and "POST" in s.name
            ),
            None,
        )

    wait_until(lambda: request_span() is not None, what="the messages request's span")
    root = request_span()
    assert root is not None

    def in_trace() -> list[Span]:
        return [s for s in receiver.spans if s.trace_id == root.trace_id]

    def posts_answered() -> bool:
        return any(s.service == "posts" and "PostsService" in s.name for s in in_trace())

    wait_until(posts_answered, what="posts' span of the GetPosts call, in the same trace")
    spans = in_trace()
    by_id = {s.span_id: s for s in spans}
    (served,) = [s for s in spans if s.service == "posts" and "PostsService" in s.name]
    called = by_id[served.parent_id]
    assert (called.service, called.kind) == ("messages", SpanMessage.SPAN_KIND_CLIENT)
    statements = [s for s in spans if s.service == "messages" and "db.system" in s.attributes]
    assert statements, [(s.service, s.name) for s in spans]
    # Every span of the request descends from its server span.
    for span in spans:
        ancestor = span
        while ancestor.parent_id and ancestor.parent_id in by_id:
            ancestor = by_id[ancestor.parent_id]
        assert ancestor is root or ancestor.parent_id == "", (span.service, span.name)

"""A small OTLP/HTTP trace receiver on loopback: where a stack's gateway and
services send their spans in the tests (which read them back) and in the
bench (which counts them). Not a collector: it keeps spans in memory, or
only counts them."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage


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
    """Takes OTLP/HTTP protobuf exports (``POST /v1/traces``) in a thread of
    its own while used as a context manager. ``keep``: hold every span in
    ``spans``; otherwise only ``counts`` (spans per service) grow."""

    daemon_threads = True

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.spans: list[Span] = []
        self.counts: collections.Counter[str] = collections.Counter()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.shutdown()
        self.server_close()

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            service = resource.get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                self.counts[service] += len(scope_spans.spans)
                if self.keep:
                    self.spans.extend(_span(service, span) for span in scope_spans.spans)


def _span(service: str, span: SpanMessage) -> Span:
    return Span(
        service=service,
        name=span.name,
        kind=span.kind,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        attributes={a.key: a.value.string_value or str(a.value.int_value) for a in span.attributes},
    )


class _Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # the http.server API
        self.server.take(ExportTraceServiceRequest.FromString(self._body()))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _body(self) -> bytes:
        """The request's body, sent with a length (Python's exporter) or in
        chunks (Envoy's)."""
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = bytearray()
        while size := int(self.rfile.readline().split(b";")[0], 16):
            body += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()  # the blank line after the last chunk
        return bytes(body)

    def log_message(self, format: str, *args: object) -> None:
        pass

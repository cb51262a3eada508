"""Distributed tracing with OpenTelemetry: off unless an OTLP endpoint is set.

Off (no ``OTEL_EXPORTER_OTLP_ENDPOINT`` nor ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``):
nothing is installed, the API's tracer is the no-op one and no request pays
for tracing. On: a tracer provider named after the service exports batches
over OTLP/HTTP, sampling as the standard variables say
(``OTEL_TRACES_SAMPLER``, e.g. ``parentbased_traceidratio`` with
``OTEL_TRACES_SAMPLER_ARG=0.01``; a request the gateway sampled is traced
throughout, whatever the ratio), and these are traced:

- incoming REST (:class:`TracedRequests`, continuing the gateway's
  ``traceparent``; spans named by route template),
- gRPC in and out (so a peer's span is a child of its caller's),
- PostgreSQL (psycopg), Redis and, in media, S3 (botocore),
- the event path: an event carries the trace context of the request that
  wrote it (:func:`inject_context`, in its envelope), its consumer's span is a
  child of that request's (:func:`continued_span`), and realtime's socket
  writes of it are children of the consumer's.

Log lines of a traced request carry its ``trace_id`` and ``span_id``
(social_common.logging).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.grpc import (
    GrpcAioInstrumentorClient,
    GrpcAioInstrumentorServer,
)
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Probes and scrapes are not requests anyone follows.
_UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")

tracer = trace.get_tracer("social")


def tracing_requested() -> bool:
    """Whether the environment names somewhere to send spans."""
    return any(
        os.environ.get(name)
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(service: str, exporter: SpanExporter | None = None) -> bool:
    """Installs tracing for this process when requested (or given an
    ``exporter``); returns whether it did. Call it before any pool, channel
    or server is made: the instrumentation wraps their constructors."""
    if exporter is None and not tracing_requested():
        return False
    if exporter is None:
        # Imported here: the exporter pulls in requests, which a process
        # without tracing never needs.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    PsycopgInstrumentor().instrument(enable_commenter=False)
    RedisInstrumentor().instrument()
    _instrument_s3()
    return True


def _instrument_s3() -> None:
    """S3 calls, in a service that makes them: its package brings boto3 and
    the botocore instrumentation (media's does); the others have neither."""
    try:
        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    except ImportError:
        return
    BotocoreInstrumentor().instrument()  # type: ignore[no-untyped-call]


def tracing_on() -> bool:
    """Whether this process traces (configure_tracing installed a provider)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def traced_app(app: ASGIApp) -> ASGIApp:
    """``app`` with a server span for each request (when tracing is on)."""
    return TracedRequests(app) if tracing_on() else app


class TracedRequests:
    """A server span per HTTP request, named ``<METHOD> <route template>``.

    Not OpenTelemetry's ASGI middleware: that one does its attribute and
    metric work for every request, sampled or not, and cost the anonymous
    feed over half its throughput at a 1% sampling ratio. Here a request the
    sampler drops costs a header parse and a context switch, nothing more.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].endswith(_UNTRACED_PATHS):
            await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        parent = propagate.extract(carrier)
        method = scope["method"]
        span = tracer.start_span(method, parent, kind=SpanKind.SERVER)
        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            if not span.is_recording():
                await self.app(scope, receive, send)
                return
            await self._traced(span, scope, receive, send)
        finally:
            span.end()
            context.detach(token)

    async def _traced(self, span: trace.Span, scope: Scope, receive: Receive, send: Send) -> None:
        span.set_attributes({"http.request.method": scope["method"], "url.path": scope["path"]})

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", str(status))
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR))
            raise
        finally:
            # The router records the route it matched (see metrics).
            route = scope.get("route")
            if isinstance(route, Route):
                span.set_attribute("http.route", route.path)
                span.update_name(f"{scope['method']} {route.path}")


def inject_context(carrier: MutableMapping[str, str]) -> None:
    """Writes the current trace context (``traceparent``) into ``carrier``,
    when there is one: an event's envelope, so its consumers continue the
    trace of the request that caused it."""
    if trace.get_current_span().get_span_context().is_valid:
        propagate.inject(carrier)


def untraced() -> AbstractContextManager[None]:
    """No span for what runs inside, nor for the tasks it starts: background
    loops (polling streams, relaying, sampling gauges) are no request anyone
    follows. A span continued inside (:func:`continued_span`) is traced."""
    return suppress_instrumentation()


def sampled_traceparent() -> str:
    """The current span's ``traceparent`` when it is sampled, else "": for
    work that only a sampled trace should follow (realtime's socket writes)."""
    if not trace.get_current_span().get_span_context().trace_flags.sampled:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


@contextmanager
def continued_span(
    name: str, carrier: Mapping[str, str], kind: SpanKind, attributes: Mapping[str, str]
) -> Iterator[None]:
    """A span continuing the trace context ``carrier`` brought (an event's,
    a frame's); nothing at all when it brought none (not traced where it
    was made)."""
    if not carrier:
        yield
        return
    # Extracted into an empty context: inside an untraced loop, traced again.
    parent = propagate.extract(carrier, context=context.Context())
    with tracer.start_as_current_span(name, parent, kind=kind, attributes=attributes):
        yield


def shutdown_tracing() -> None:
    """Exports what is still buffered (on the way out)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()

"""Distributed tracing with OpenTelemetry: off unless an OTLP endpoint is set.

Off (no ``OTEL_EXPORTER_OTLP_ENDPOINT`` nor ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``):
nothing is installed, the API's tracer is the no-op one and no request pays
for tracing. On: a tracer provider named after the service exports batches
over OTLP/HTTP, sampling as the standard variables say
(``OTEL_TRACES_SAMPLER``, e.g. ``parentbased_traceidratio`` with
``OTEL_TRACES_SAMPLER_ARG=0.1``; the SDK's default keeps every trace a parent
did not decide), and these are traced: incoming REST (an ASGI middleware,
continuing the gateway's ``traceparent``), gRPC in and out (so a peer's span
is a child of its caller's), PostgreSQL (psycopg) and Redis. Log lines of a
traced request carry its ``trace_id`` and ``span_id`` (social_common.logging).

Not yet traced: the gateway's own spans, the event path (an outbox row does
not carry the trace context yet) and S3 calls.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.grpc import (
    GrpcAioInstrumentorClient,
    GrpcAioInstrumentorServer,
)
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from starlette.types import ASGIApp

# Probes and scrapes are not requests anyone follows.
_UNTRACED_PATHS = "healthz,readyz,metrics"


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
    return True


def traced_app(app: ASGIApp) -> ASGIApp:
    """``app`` with a server span for each request (when tracing is on)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        return app
    # One span per request: not one more for each chunk read or written.
    return OpenTelemetryMiddleware(
        app, excluded_urls=_UNTRACED_PATHS, exclude_spans=["receive", "send"]
    )


def shutdown_tracing() -> None:
    """Exports what is still buffered (on the way out)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()

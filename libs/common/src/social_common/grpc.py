"""grpc.aio server plumbing: RED metrics per RPC, request ids, health, reflection."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from social_common.errors import PEER_UNAVAILABLE, UNAVAILABLE
from social_common.logging import bind_request_context, clear_request_context, get_logger
from social_common.metrics import GRPC_DURATION, GRPC_HANDLED

log = get_logger(__name__)

UnaryHandler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every unary RPC by method and status code, and binds
    the caller's ``x-request-id`` metadata to the log context.

    A handler that fails because PostgreSQL or Redis is away (or a peer of
    its own is unavailable) answers UNAVAILABLE, as the REST side answers
    503: the caller then refuses its own request with a 503 it may retry,
    not with the 500 an UNKNOWN status would make of it."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        request_id = _metadata_value(handler_call_details.invocation_metadata, "x-request-id")
        inner = cast(UnaryHandler, handler.unary_unary)

        async def measured(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            clear_request_context()
            if request_id:
                bind_request_context(request_id=request_id)
            started = time.perf_counter()
            failed = False
            try:
                return await inner(request, context)
            except UNAVAILABLE as exc:
                failed = True
                await _unavailable(context, method, exc)
            except grpc.aio.AioRpcError as exc:
                failed = True
                if exc.code() not in PEER_UNAVAILABLE:
                    raise
                await _unavailable(context, method, exc)
            except BaseException:
                failed = True
                raise
            finally:
                code = context.code()
                if code is None:
                    code = grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                GRPC_HANDLED.labels(method, name).inc()
                GRPC_DURATION.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _unavailable(
    context: grpc.aio.ServicerContext[Any, Any], method: str, exc: Exception
) -> None:
    log.warning("dependency_unavailable", method=method, error=repr(exc))
    await context.abort(grpc.StatusCode.UNAVAILABLE, "A dependency is unavailable; retry shortly.")


def _metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else value
    return None


# Clients balance over the pods they resolved (round robin over a headless
# Service's addresses) and resolve again only when a connection closes: ending
# each connection after a minute (with half a minute for the calls on it) lets
# them find the pods an autoscaler added since.
MAX_CONNECTION_AGE_MS = 60_000
MAX_CONNECTION_AGE_GRACE_MS = 30_000


def create_server(*, share_port: bool = False) -> grpc.aio.Server:
    return grpc.aio.server(
        interceptors=[MetricsInterceptor()],
        options=[
            # Unless replicas share it on purpose, a second process on the port fails.
            ("grpc.so_reuseport", 1 if share_port else 0),
            ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
            ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
        ],
    )


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: Sequence[str]
) -> health.aio.HealthServicer:
    """Serves grpc.health.v1 (overall and per service) and server reflection."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return servicer


SERVING = health_pb2.HealthCheckResponse.SERVING

"""The gRPC server plumbing on real servers: health per service, reflection,
RED metrics per RPC with the status it ended with, request ids in the log
context, and a port that only replicas meant to share may share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import REGISTRY
from social.auth.v1 import auth_pb2
from social_common.grpc import SERVING, add_health_and_reflection, create_server
from social_common.logging import bind_request_context

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
DEMO = "test.grpc.Demo"

Context = grpc.aio.ServicerContext[Any, Any]


async def _echo_request_id(_request: bytes, _context: Context) -> bytes:
    return str(structlog.contextvars.get_contextvars().get("request_id", "")).encode()


async def _fail(_request: bytes, _context: Context) -> bytes:
    raise RuntimeError("a bug in a handler")


async def _refuse(_request: bytes, context: Context) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no such thing")
    raise AssertionError("abort returns no more")


def _raw(data: bytes) -> bytes:
    return data


def _unary(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A caller of a method of the demo service, in raw bytes."""
    return channel.unary_unary(method, request_serializer=_raw, response_deserializer=_raw)


def _demo_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        DEMO,
        {
            name: grpc.unary_unary_rpc_method_handler(handler)
            for name, handler in (("Echo", _echo_request_id), ("Fail", _fail), ("Refuse", _refuse))
        },
    )


Scenario = Callable[[grpc.aio.Channel, Any], Awaitable[None]]


def _run(scenario: Scenario, server_context: dict[str, str] | None = None) -> None:
    async def main() -> None:
        # What the process bound before it started serving (its RPCs start from that context).
        bind_request_context(**(server_context or {}))
        server = create_server()
        server.add_generic_rpc_handlers([_demo_handler()])
        health = add_health_and_reflection(server, [AUTH_SERVICE])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            await scenario(channel, health)
        finally:
            await channel.close()
            await server.stop(None)

    asyncio.run(main())


def _handled(method: str, code: str) -> float:
    labels = {"method": method, "code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


def _timed(method: str) -> float:
    return (
        REGISTRY.get_sample_value("grpc_server_handling_seconds_count", {"method": method}) or 0.0
    )


async def _status(channel: grpc.aio.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)  # type: ignore[attr-defined]  # stub gap
    status: int = reply.status
    return status


def test_health_answers_overall_and_per_service_and_follows_the_shutdown() -> None:
    seen: dict[str, object] = {}

    async def scenario(channel: grpc.aio.Channel, health: Any) -> None:
        seen["overall"] = await _status(channel, "")
        await health.set(AUTH_SERVICE, SERVING)
        seen["service"] = await _status(channel, AUTH_SERVICE)
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await _status(channel, "social.nothing.v1.Nothing")
        seen["unknown"] = unknown.value.code()
        await health.enter_graceful_shutdown()
        seen["draining"] = await _status(channel, "")
        seen["service draining"] = await _status(channel, AUTH_SERVICE)

    _run(scenario)
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert seen == {
        "overall": SERVING,
        "service": SERVING,
        "unknown": grpc.StatusCode.NOT_FOUND,
        "draining": not_serving,
        "service draining": not_serving,
    }


async def _reflect(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield request

    async for reply in info(requests(), timeout=5):
        return reply
    raise AssertionError("no reflection reply")


def test_reflection_lists_the_services_and_describes_them() -> None:
    found: dict[str, Any] = {}

    async def scenario(channel: grpc.aio.Channel, _health: Any) -> None:
        listed = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
        found["services"] = {s.name for s in listed.list_services_response.service}
        described = await _reflect(
            channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=AUTH_SERVICE)
        )
        files = [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in described.file_descriptor_response.file_descriptor_proto
        ]
        found["methods"] = {
            method.name
            for file in files
            for service in file.service
            if f"{file.package}.{service.name}" == AUTH_SERVICE
            for method in service.method
        }

    _run(scenario)
    assert found["services"] == {
        AUTH_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert {"GetUsers", "GetJwks"} <= found["methods"]


def test_every_unary_rpc_is_counted_and_timed_by_method_and_final_code() -> None:
    echo, fail, refuse = (f"/{DEMO}/{name}" for name in ("Echo", "Fail", "Refuse"))
    check = "/grpc.health.v1.Health/Check"
    before = {
        "echo": _handled(echo, "OK"),
        "fail": _handled(fail, "UNKNOWN"),
        "refuse": _handled(refuse, "INVALID_ARGUMENT"),
        "check": _handled(check, "OK"),
        "missing": _handled(check, "NOT_FOUND"),
        "echo timed": _timed(echo),
    }
    codes: list[grpc.StatusCode] = []

    async def scenario(channel: grpc.aio.Channel, _health: Any) -> None:
        await _unary(channel, echo)(b"", timeout=5)
        await _unary(channel, echo)(b"", timeout=5)
        for method in (fail, refuse):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await _unary(channel, method)(b"", timeout=5)
            codes.append(failed.value.code())
        await _status(channel, "")
        with pytest.raises(grpc.aio.AioRpcError):
            await _status(channel, "social.nothing.v1.Nothing")

    _run(scenario)
    assert codes == [grpc.StatusCode.UNKNOWN, grpc.StatusCode.INVALID_ARGUMENT]
    after = {
        "echo": _handled(echo, "OK"),
        "fail": _handled(fail, "UNKNOWN"),
        "refuse": _handled(refuse, "INVALID_ARGUMENT"),
        "check": _handled(check, "OK"),
        "missing": _handled(check, "NOT_FOUND"),
        "echo timed": _timed(echo),
    }
    assert {k: after[k] - before[k] for k in before} == {
        "echo": 2,
        "fail": 1,
        "refuse": 1,
        "check": 1,
        "missing": 1,
        "echo timed": 2,
    }


def test_the_callers_request_id_is_in_the_log_context_of_its_call_only() -> None:
    replies: list[bytes] = []

    async def scenario(channel: grpc.aio.Channel, _health: Any) -> None:
        echo = _unary(channel, f"/{DEMO}/Echo")
        replies.append(await echo(b"", metadata=(("x-request-id", "req-7"),), timeout=5))
        replies.append(await echo(b"", timeout=5))
        replies.append(await echo(b"", metadata=(("x-request-id", "req-8"),), timeout=5))

    # Whatever was bound where the server started is no call's request id.
    _run(scenario, server_context={"request_id": "startup"})
    assert replies == [b"req-7", b"", b"req-8"]


def test_a_port_in_use_is_refused_unless_replicas_share_it_on_purpose() -> None:
    async def main() -> None:
        first = create_server()
        port = first.add_insecure_port("127.0.0.1:0")
        await first.start()
        shared = create_server(share_port=True)
        shared_port = shared.add_insecure_port("127.0.0.1:0")
        await shared.start()
        try:
            with pytest.raises(RuntimeError, match="Failed to bind"):
                create_server().add_insecure_port(f"127.0.0.1:{port}")
            assert (
                create_server(share_port=True).add_insecure_port(f"127.0.0.1:{shared_port}")
                == shared_port
            )
        finally:
            await first.stop(None)
            await shared.stop(None)

    asyncio.run(main())

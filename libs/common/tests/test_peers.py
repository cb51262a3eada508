"""A peer channel spreads its calls over every address its target resolves to
(in Kubernetes, every pod behind the peer's headless Service)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from social_common.grpc import add_health_and_reflection
from social_common.peers import channel


class _Count(grpc.aio.ServerInterceptor):
    def __init__(self, name: str, calls: Counter[str]) -> None:
        self.name, self.calls = name, calls

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        self.calls[self.name] += 1
        return await continuation(handler_call_details)


def test_calls_are_spread_over_every_resolved_address() -> None:
    async def main() -> Counter[str]:
        calls: Counter[str] = Counter()
        servers, ports = [], []
        for name in ("pod-a", "pod-b"):
            server = grpc.aio.server(interceptors=[_Count(name, calls)])
            add_health_and_reflection(server, [])
            ports.append(server.add_insecure_port("127.0.0.1:0"))
            await server.start()
            servers.append(server)
        peer = channel("ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports))
        try:
            health = health_pb2_grpc.HealthStub(peer)
            for _ in range(40):
                await health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]  # stub gap
        finally:
            await peer.close()
            for server in servers:
                await server.stop(None)
        return calls

    calls = asyncio.run(main())
    # Round robin over the addresses that are connected: the first calls may
    # all go to the one that connected first.
    assert calls.keys() == {"pod-a", "pod-b"}
    assert min(calls.values()) >= 10, calls

"""Wiring of the realtime service: its public routes and its gRPC servicers."""

from collections.abc import Sequence

import grpc
from social_common.runner import Resources, ServiceSpec
from starlette.routing import BaseRoute


def routes(_resources: Resources) -> Sequence[BaseRoute]:
    return []


def register_grpc(_server: grpc.aio.Server, _resources: Resources) -> Sequence[str]:
    # The realtime servicer (GetPresence) is not wired in yet: it arrives with the realtime issue.
    return []


def spec() -> ServiceSpec:
    return ServiceSpec(
        name="realtime", routes=routes, register_grpc=register_grpc, uses_database=False
    )

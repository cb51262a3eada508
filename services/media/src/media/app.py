"""Wiring of the media service: its public routes and its gRPC servicers."""

from collections.abc import Sequence

import grpc
from social_common.runner import Resources, ServiceSpec
from starlette.routing import BaseRoute


def routes(_resources: Resources) -> Sequence[BaseRoute]:
    return []


def register_grpc(_server: grpc.aio.Server, _resources: Resources) -> Sequence[str]:
    # The media servicer is not wired in yet: its RPCs arrive with the media issue.
    return []


def spec() -> ServiceSpec:
    return ServiceSpec(name="media", routes=routes, register_grpc=register_grpc, uses_database=True)

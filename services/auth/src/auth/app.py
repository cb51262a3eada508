"""Wiring of the auth service: its public routes and its gRPC servicers."""

from collections.abc import Sequence

import grpc
from social_common.runner import Resources, ServiceSpec
from starlette.routing import BaseRoute


def routes(_resources: Resources) -> Sequence[BaseRoute]:
    return []


def register_grpc(_server: grpc.aio.Server, _resources: Resources) -> Sequence[str]:
    # The auth servicer is not wired in yet: its RPCs arrive with the auth issue.
    return []


def spec() -> ServiceSpec:
    return ServiceSpec(name="auth", routes=routes, register_grpc=register_grpc, uses_database=True)

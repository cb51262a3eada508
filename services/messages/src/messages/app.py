"""Wiring of the messages service: its public routes and its gRPC servicers."""

from social_common.runner import Resources, ServiceSpec, Wiring


def wire(_resources: Resources) -> Wiring:
    # Nothing served yet beyond the platform routes: the messages API arrives with its issue.
    return Wiring()


def spec() -> ServiceSpec:
    return ServiceSpec(name="messages", wire=wire, uses_database=True)

"""Wiring of the posts service: its public routes and its gRPC servicers."""

from social_common.runner import Resources, ServiceSpec, Wiring


def wire(_resources: Resources) -> Wiring:
    # Nothing served yet beyond the platform routes: the posts API arrives with its issue.
    return Wiring()


def spec() -> ServiceSpec:
    return ServiceSpec(name="posts", wire=wire, uses_database=True)

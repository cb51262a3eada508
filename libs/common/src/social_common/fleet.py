"""The fleet's roster (``fleet.yaml`` beside this module): the services and their facts.

The one source every consumer reads: the services' settings, the local stack,
the gateway template, the Helm chart (through a link to the same file) and
the tests. It ships inside this package, so an image knows it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml

RouteKind = Literal["regex", "path", "prefix", "websocket"]
# The order in which the gateway tries routes: the narrow kinds first, so a
# regex can carve a path out of another service's prefix.
ROUTE_ORDER: tuple[RouteKind, ...] = ("regex", "websocket", "path", "prefix")
DEFAULT_TIMEOUT_SECONDS = 15
# The event on which a service erases an account's data (see Fleet.user_data_keepers).
USER_DELETED = "user.deleted"
_NAME = re.compile(r"^[a-z][a-z0-9]{0,30}$")


class RosterError(ValueError):
    """fleet.yaml says something inconsistent."""


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int


@dataclass(frozen=True)
class GatewayPorts:
    public: int
    ops: int
    admin: int


@dataclass(frozen=True)
class WebClient:
    """The web client's static server."""

    http_port: int
    admin_port: int
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    value: str


@dataclass(frozen=True)
class Service:
    name: str
    ports: Ports
    database: bool
    objects: bool
    peers: tuple[str, ...]
    publishes: tuple[str, ...]
    consumes: tuple[str, ...]
    routes: tuple[Route, ...]
    cached: tuple[str, ...]
    timeout_seconds: int
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Fleet:
    pod_ports: Ports
    gateway_ports: GatewayPorts
    web: WebClient
    services: dict[str, Service]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.services)

    @property
    def database_services(self) -> tuple[str, ...]:
        return tuple(name for name, service in self.services.items() if service.database)

    @property
    def user_data_keepers(self) -> tuple[str, ...]:
        """The services that keep data of a user: they erase it on
        ``user.deleted`` and serve it for export (social_common.userdata)."""
        return tuple(name for name, s in self.services.items() if USER_DELETED in s.consumes)

    def routes(self) -> list[tuple[str, Route]]:
        """Every public route with its service, in the order the gateway tries them."""
        routes = [(s.name, r) for s in self.services.values() for r in s.routes]
        return sorted(routes, key=lambda sr: (ROUTE_ORDER.index(sr[1].kind), -len(sr[1].value)))


# A service's keys: those it must have, and those it may.
_REQUIRED = {"ports", "database", "replicas"}
_OPTIONAL = {"objects", "peers", "publishes", "consumes", "routes", "cached", "timeout"}


def _service(name: str, raw: dict[str, Any]) -> Service:
    if not _NAME.match(name):
        raise RosterError(f"{name!r}: a service name is lower-case letters and digits")
    # A misspelt key would otherwise be a fact silently dropped (no S3, no peer).
    if missing := _REQUIRED - raw.keys():
        raise RosterError(f"{name}: missing {sorted(missing)}")
    if unknown := raw.keys() - _REQUIRED - _OPTIONAL:
        raise RosterError(f"{name}: unknown keys {sorted(unknown)}")
    routes = []
    for entry in raw.get("routes", []):
        ((kind, value),) = entry.items()
        if kind not in ROUTE_ORDER:
            raise RosterError(f"{name}: route kind {kind!r} is not one of {ROUTE_ORDER}")
        routes.append(Route(kind, value))
    cached = tuple(raw.get("cached", []))
    if bad := [path for path in cached if not path.startswith("/") or "?" in path]:
        raise RosterError(f"{name}: cached paths are exact paths without a query: {bad}")
    replicas = raw["replicas"]
    return Service(
        name=name,
        ports=Ports(**raw["ports"]),
        database=bool(raw["database"]),
        objects=bool(raw.get("objects", False)),
        peers=tuple(raw.get("peers", [])),
        publishes=tuple(raw.get("publishes", [])),
        consumes=tuple(raw.get("consumes", [])),
        routes=tuple(routes),
        cached=cached,
        timeout_seconds=int(raw.get("timeout", DEFAULT_TIMEOUT_SECONDS)),
        min_replicas=int(replicas["min"]),
        max_replicas=int(replicas["max"]),
    )


def parse(text: str) -> Fleet:
    """A roster from its YAML text, checked for consistency."""
    raw = yaml.safe_load(text)
    fleet = Fleet(
        pod_ports=Ports(**raw["pod_ports"]),
        gateway_ports=GatewayPorts(**raw["gateway_ports"]),
        web=WebClient(
            http_port=int(raw["web"]["ports"]["http"]),
            admin_port=int(raw["web"]["ports"]["admin"]),
            min_replicas=int(raw["web"]["replicas"]["min"]),
            max_replicas=int(raw["web"]["replicas"]["max"]),
        ),
        services={name: _service(name, entry) for name, entry in raw["services"].items()},
    )
    published = {event for s in fleet.services.values() for event in s.publishes}
    ports = [fleet.web.http_port, fleet.web.admin_port]
    for service in fleet.services.values():
        if strangers := [p for p in service.peers if p == service.name or p not in fleet.services]:
            raise RosterError(f"{service.name}: peers {strangers} are not other services")
        if unheard := set(service.consumes) - published:
            raise RosterError(f"{service.name}: consumes {sorted(unheard)}, which nobody publishes")
        if USER_DELETED in service.publishes and (
            unasked := set(fleet.user_data_keepers) - set(service.peers) - {service.name}
        ):
            raise RosterError(
                f"{service.name}: exports the accounts it deletes: {sorted(unasked)} must be peers"
            )
        if not 1 <= service.min_replicas <= service.max_replicas:
            raise RosterError(f"{service.name}: replicas need 1 <= min <= max")
        ports += [service.ports.http, service.ports.grpc]
    if len(ports) != len(set(ports)):
        raise RosterError("two services (or the web client) share a local port")
    return fleet


@cache
def roster() -> Fleet:
    """The fleet as ``fleet.yaml`` describes it."""
    return parse(resources.files("social_common").joinpath("fleet.yaml").read_text())


if __name__ == "__main__":
    # `python -m social_common.fleet`: the services' names, one a line (for scripts and CI).
    print("\n".join(roster().names))

"""The roster (fleet.yaml) is the one list of the services, and what reads it agrees with it."""

from __future__ import annotations

import ast
import asyncio
import tomllib

import pytest
from social_common.fleet import RosterError, parse, roster
from social_common.settings import Settings
from social_stack.paths import REPO_ROOT
from social_stack.testing import wire_offline


def test_every_service_package_is_in_the_roster_and_every_roster_entry_has_one() -> None:
    packages = {path.parent.name for path in (REPO_ROOT / "services").glob("*/pyproject.toml")}
    assert packages == set(roster().names)


def test_the_workspace_installs_every_service() -> None:
    # uv needs the names written out; the roster decides which they are.
    workspace = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    sources = workspace["tool"]["uv"]["sources"]
    dev = set(workspace["dependency-groups"]["dev"])
    mypy_path = workspace["tool"]["mypy"]["mypy_path"].split(":")
    for name in roster().names:
        assert sources.get(name) == {"workspace": True}, name
        assert name in dev, name
        assert f"services/{name}/src" in mypy_path, name


def _consumed() -> dict[str, set[str]]:
    """The event types each service's consumer group handles, read off its wiring."""

    async def wired() -> dict[str, set[str]]:
        consumed: dict[str, set[str]] = {}
        for name in roster().names:
            consumed[name] = set((await wire_offline(name)).events)
        return consumed

    return asyncio.run(wired())


def test_each_service_consumes_exactly_the_events_the_roster_says() -> None:
    assert _consumed() == {name: set(s.consumes) for name, s in roster().services.items()}


def _published(service: str) -> set[str]:
    """The event types a service's code writes: every string in the value of an
    ``event_type=`` argument (to ``emit``) in its package."""
    found: set[str] = set()
    for path in (REPO_ROOT / "services" / service / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "event_type":
                strings = [n.value for n in ast.walk(node.value) if isinstance(n, ast.Constant)]
                found |= {value for value in strings if isinstance(value, str)}
    return found


def test_each_service_publishes_exactly_the_events_the_roster_says() -> None:
    published = {name: _published(name) for name in roster().names}
    assert published == {name: set(s.publishes) for name, s in roster().services.items()}


@pytest.mark.parametrize("environment", ["dev", "production"])
def test_a_service_knows_exactly_its_roster_peers(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("APP_ENV", environment)
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/social")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    fleet = roster()
    for name, service in fleet.services.items():
        settings = Settings.from_env(name)
        assert set(settings.peers) == set(service.peers)
        ports = fleet.pod_ports if environment == "production" else service.ports
        assert (settings.http_port, settings.grpc_port) == (ports.http, ports.grpc)
        assert (settings.database_url is not None) == service.database


_VALID = """
pod_ports: {http: 8080, grpc: 9090}
gateway_ports: {public: 8000, ops: 9902, admin: 9901}
web: {ports: {http: 8106, admin: 9906}, replicas: {min: 1, max: 2}}
services:
  one:
    ports: {http: 8101, grpc: 9111}
    database: true
    publishes: [thing.made, user.deleted]
    replicas: {min: 1, max: 2}
  two:
    ports: {http: 8102, grpc: 9112}
    database: false
    peers: [one]
    consumes: [thing.made]
    routes: [{prefix: /api/v1/two}]
    replicas: {min: 1, max: 2}
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("peers: [one]", "peers: [three]"), "not other services"),
        (("peers: [one]", "peers: [two]"), "not other services"),
        (("consumes: [thing.made]", "consumes: [thing.lost]"), "nobody publishes"),
        (("http: 8102", "http: 8101"), "share a local port"),
        (("{min: 1, max: 2}\n  two", "{min: 3, max: 2}\n  two"), "min <= max"),
        (("{prefix: /api/v1/two}", "{glob: /api/*}"), "route kind"),
        (("  two:", "  Two:"), "lower-case"),
        (("    database: false\n", "    database: false\n    object: true\n"), "unknown keys"),
        (("    database: false\n", ""), "missing"),
        # An account's deleter exports it too, from every service keeping some.
        (("consumes: [thing.made]", "consumes: [user.deleted]"), "must be peers"),
    ],
)
def test_a_roster_that_contradicts_itself_is_refused(change: tuple[str, str], message: str) -> None:
    parse(_VALID)
    with pytest.raises(RosterError, match=message):
        parse(_VALID.replace(*change))

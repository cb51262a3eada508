"""Service settings, read from environment variables and validated at start.

Every service reads the same base settings; a service with more of its own
subclasses :class:`Settings` and adds fields read with the ``env_*`` helpers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from social_common.fleet import roster

Environment = Literal["dev", "test", "production"]
_ENVIRONMENTS: tuple[Environment, ...] = ("dev", "test", "production")


class SettingsError(ValueError):
    """A setting is missing or malformed; the service refuses to start."""


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise SettingsError(f"{name} must be set")
    return value


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int = 2**31) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, not {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, not {value}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


DEV_POSTGRES_PORT = 54329
DEV_REDIS_PORT = 63799


def dev_database_url(service: str, port: int = DEV_POSTGRES_PORT) -> str:
    """The local stack's connection string for a service's own role."""
    return f"postgresql://{service}:dev-{service}@127.0.0.1:{port}/social"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every service needs to run; see the README for each variable."""

    service: str
    environment: Environment = "dev"
    bind_host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 9000
    database_url: str | None = field(default=None, repr=False)  # holds a password
    # An administrator's URL of the same database, for `migrate` alone: then it
    # first makes the service's role (DATABASE_URL's user and password) and schema.
    database_admin_url: str | None = field(default=None, repr=False)
    db_pool_min: int = 2
    db_pool_max: int = 10
    redis_url: str = field(default=f"redis://127.0.0.1:{DEV_REDIS_PORT}/0", repr=False)
    log_level: str = "info"
    # Seconds /readyz reports "draining" before listeners close, so that load
    # balancers stop routing here first (Kubernetes endpoint removal lags).
    shutdown_delay: float = 0.0
    # Seconds in-flight requests and RPCs get to finish after listeners close.
    shutdown_grace: float = 20.0
    # WebSockets: a ping this often; a peer that has not answered within as
    # long again is taken for dead and its socket closed (1011).
    ws_ping_seconds: float = 20.0
    peers: dict[str, str] = field(default_factory=dict)
    # Whether other processes of this service listen on the same ports
    # (SO_REUSEPORT; the kernel spreads connections): replicas on one machine,
    # as the local stack runs them. Off, a second process on a port fails.
    share_ports: bool = False
    # Access tokens: who issues them and for whom; every service checks both.
    jwt_issuer: str = "social-auth"
    jwt_audience: str = "social-api"
    # How long any reader (the gateway, each service) may cache the JWKS; auth
    # publishes a new key at least this long before signing with it.
    jwks_cache_seconds: int = 300

    @classmethod
    def from_env(cls, service: str, *, needs_redis: bool = True) -> Settings:
        """The settings of ``service`` from the environment. A command that
        does not serve (``migrate``) may leave REDIS_URL unset in production."""
        environment = env_str("APP_ENV", "dev")
        if environment not in _ENVIRONMENTS:
            raise SettingsError(f"APP_ENV must be one of {', '.join(_ENVIRONMENTS)}")
        production = environment == "production"
        # In production every service listens on the same ports of its own pod,
        # and finds a peer by its Kubernetes service name; locally, on the
        # roster's ports of the machine.
        fleet = roster()
        entry = fleet.services.get(service)  # None: a service outside the roster (tests)
        ports = entry.ports if entry and not production else fleet.pod_ports
        database_url: str | None = None
        if entry and entry.database:
            database_url = env_str(
                "DATABASE_URL", None if production else dev_database_url(service)
            )
        redis_default = None if production else f"redis://127.0.0.1:{DEV_REDIS_PORT}/0"
        redis_url = (
            env_str("REDIS_URL", redis_default)
            if needs_redis
            else os.environ.get("REDIS_URL") or redis_default or ""
        )
        if production:
            for name, url in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)):
                if url and ":dev-" in url:
                    raise SettingsError(f"{name} holds a dev placeholder password in production")
        # Only the peers the roster gives it: a call to any other fails at start.
        peers = {
            name: os.environ.get(
                f"{name.upper()}_GRPC_ADDR",
                f"{name}:{fleet.pod_ports.grpc}"
                if production
                else f"127.0.0.1:{fleet.services[name].ports.grpc}",
            )
            for name in (entry.peers if entry else ())
        }
        return cls(
            service=service,
            environment=environment,
            bind_host=env_str("BIND_HOST", "0.0.0.0" if production else "127.0.0.1"),  # noqa: S104
            http_port=env_int("HTTP_PORT", ports.http, maximum=65535),
            grpc_port=env_int("GRPC_PORT", ports.grpc, maximum=65535),
            database_url=database_url,
            database_admin_url=os.environ.get("DATABASE_ADMIN_URL") or None,
            db_pool_min=env_int("DB_POOL_MIN", 2, minimum=1),
            db_pool_max=env_int("DB_POOL_MAX", 10, minimum=1),
            redis_url=redis_url,
            log_level=env_str("LOG_LEVEL", "info").lower(),
            shutdown_delay=env_float("SHUTDOWN_DELAY_SECONDS", 5.0 if production else 0.0),
            shutdown_grace=env_float("SHUTDOWN_GRACE_SECONDS", 20.0),
            ws_ping_seconds=env_float("WS_PING_SECONDS", cls.ws_ping_seconds, minimum=0.1),
            peers=peers,
            share_ports=env_int("SHARE_PORTS", 0, maximum=1) == 1,
            jwt_issuer=env_str("JWT_ISSUER", cls.jwt_issuer),
            jwt_audience=env_str("JWT_AUDIENCE", cls.jwt_audience),
            jwks_cache_seconds=env_int("JWKS_CACHE_SECONDS", cls.jwks_cache_seconds, minimum=1),
        )

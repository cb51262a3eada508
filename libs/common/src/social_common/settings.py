"""Service settings, read from environment variables and validated at start.

Every service has one settings class: :class:`Settings`, which holds what
every service reads, extended with the service's own fields. A field read
from the environment is declared with :func:`setting`, which names its
variable, its bounds, and what production does with its default::

    @dataclass(frozen=True, kw_only=True)
    class PostsSettings(Settings):
        timeline_size: int = setting("POSTS_TIMELINE_SIZE", 800, minimum=40)

``PostsSettings.from_env("posts")`` then reads them all. The field's type
says how its text is read: ``str``, ``int``, ``float``, ``bool`` (0 or 1), an
optional ``str`` (unset or empty: None), or a class with a ``parse(text)``
class method (such as :class:`social_common.ratelimit.Rate`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import ssl
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from social_common.fleet import roster

Environment = Literal["dev", "test", "production"]
_ENVIRONMENTS: tuple[Environment, ...] = ("dev", "test", "production")

DEV_POSTGRES_PORT = 54329
DEV_REDIS_PORT = 63799


class SettingsError(ValueError):
    """A setting is missing or malformed; the service refuses to start."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""``production=REQUIRED``: production must set the variable (the default is dev's)."""

_KEEP: Any = object()


@dataclass(frozen=True)
class EnvVar:
    """How a field is read: from ``name``, within bounds, with production's default."""

    name: str
    minimum: float | None = None
    maximum: float | None = None
    # _KEEP: production keeps the default; REQUIRED: it must set the variable;
    # anything else: production's own default.
    production: Any = _KEEP

    def default_for(self, default: Any, production: bool) -> Any:
        if not production or self.production is _KEEP:
            return default
        return self.production


def setting(
    name: str,
    default: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    production: Any = _KEEP,
    secret: bool = False,
) -> Any:
    """A settings field read from the variable ``name`` (see the module's docstring).

    ``production``: REQUIRED, or production's own default when it differs from
    dev's. ``secret``: the value is left out of the settings' repr.
    """
    return field(
        default=default,
        repr=not secret,
        metadata={"env": EnvVar(name, minimum, maximum, production)},
    )


def dev_database_url(service: str, port: int = DEV_POSTGRES_PORT) -> str:
    """The local stack's connection string for a service's own role."""
    return f"postgresql://{service}:dev-{service}@127.0.0.1:{port}/social"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every service reads; see the README for each variable.

    The first fields depend on the service and the environment and are
    worked out by :meth:`from_env`; the rest are declared with :func:`setting`.
    """

    service: str
    environment: Environment = "dev"
    http_port: int = 8000
    grpc_port: int = 9000
    database_url: str | None = field(default=None, repr=False)  # holds a password
    redis_url: str = field(default=f"redis://127.0.0.1:{DEV_REDIS_PORT}/0", repr=False)
    # The gRPC address of each peer the roster gives the service.
    peers: dict[str, str] = field(default_factory=dict)

    bind_host: str = setting("BIND_HOST", "127.0.0.1", production="0.0.0.0")  # noqa: S104
    # An administrator's URL of the same database, for `migrate` alone: then it
    # first makes the service's role (DATABASE_URL's user and password) and schema.
    database_admin_url: str | None = setting("DATABASE_ADMIN_URL", None, secret=True)
    # The PEM of the CA certificate(s) that signed Redis's TLS certificate, for
    # a rediss:// REDIS_URL whose server the system's trust store does not
    # vouch for (Memorystore's own CA); unset: the system's trust store alone.
    # Public, not secret: `secret` only keeps the long PEM out of the repr.
    redis_ca_cert: str | None = setting("REDIS_CA_CERT", None, secret=True)
    # Replicas that must have an event before the outbox lets it go (WAIT):
    # 1 where Redis's primaries have a replica (a failover then loses no
    # event the relay published), 0 for one server alone.
    redis_wait_replicas: int = setting("REDIS_WAIT_REPLICAS", 0, minimum=0)
    db_pool_min: int = setting("DB_POOL_MIN", 2, minimum=1)
    db_pool_max: int = setting("DB_POOL_MAX", 10, minimum=1)
    log_level: str = setting("LOG_LEVEL", "info")
    # Seconds /readyz reports "draining" before listeners close, so that load
    # balancers stop routing here first (Kubernetes endpoint removal lags).
    shutdown_delay: float = setting("SHUTDOWN_DELAY_SECONDS", 0.0, minimum=0, production=5.0)
    # Seconds in-flight requests and RPCs get to finish after listeners close.
    shutdown_grace: float = setting("SHUTDOWN_GRACE_SECONDS", 20.0, minimum=0)
    # WebSockets: a ping this often; a peer that has not answered within as
    # long again is taken for dead and its socket closed (1011).
    ws_ping_seconds: float = setting("WS_PING_SECONDS", 20.0, minimum=0.1)
    # Whether other processes of this service listen on the same ports
    # (SO_REUSEPORT; the kernel spreads connections): replicas on one machine,
    # as the local stack runs them. Off, a second process on a port fails.
    share_ports: bool = setting("SHARE_PORTS", False)
    # Access tokens: who issues them and for whom; every service checks both.
    jwt_issuer: str = setting("JWT_ISSUER", "social-auth")
    jwt_audience: str = setting("JWT_AUDIENCE", "social-api")
    # How long any reader (the gateway, each service) may cache the JWKS; auth
    # publishes a new key at least this long before signing with it.
    jwks_cache_seconds: int = setting("JWKS_CACHE_SECONDS", 300, minimum=1)

    @classmethod
    def from_env(cls, service: str, *, needs_redis: bool = True) -> Self:
        """The settings of ``service`` from the environment. A command that
        does not serve (``migrate``) may leave REDIS_URL unset in production."""
        environment = _read_str("APP_ENV", "dev")
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
            database_url = _read_str(
                "DATABASE_URL", None if production else dev_database_url(service)
            )
        redis_default = None if production else f"redis://127.0.0.1:{DEV_REDIS_PORT}/0"
        redis_url = (
            _read_str("REDIS_URL", redis_default)
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
        hints = typing.get_type_hints(cls)
        declared = {
            f.name: _read(f, hints[f.name], production)
            for f in dataclasses.fields(cls)
            if "env" in f.metadata
        }
        _check_redis_ca(declared["redis_ca_cert"], redis_url)
        return cls(
            service=service,
            environment=environment,
            http_port=_read_port("HTTP_PORT", ports.http),
            grpc_port=_read_port("GRPC_PORT", ports.grpc),
            database_url=database_url,
            redis_url=redis_url,
            peers=peers,
            **declared,
        )

    @classmethod
    def variables(cls) -> list[EnvVar]:
        """Every variable a ``from_env`` of this class reads besides APP_ENV,
        the URLs, the ports and the peers' addresses."""
        return [f.metadata["env"] for f in dataclasses.fields(cls) if "env" in f.metadata]


def _read(f: dataclasses.Field[Any], hint: Any, production: bool) -> Any:
    var: EnvVar = f.metadata["env"]
    default = var.default_for(f.default, production)
    raw = os.environ.get(var.name, "")
    if raw == "":
        if default is REQUIRED:
            raise SettingsError(f"{var.name} must be set in production")
        return default
    # X | None is read as X (an unset or empty variable is the default).
    kind = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    if kind is str:
        return raw
    if kind is bool:
        if raw not in ("0", "1"):
            raise SettingsError(f"{var.name} must be 0 or 1, not {raw!r}")
        return raw == "1"
    if kind in (int, float):
        value = _number(var.name, raw, kind)
        _check_bounds(var.name, value, var.minimum, var.maximum)
        return value
    try:
        return kind.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{var.name}: {exc}") from None


def _check_redis_ca(ca_cert: str | None, redis_url: str) -> None:
    """REDIS_CA_CERT, when set, is PEM certificates for a rediss:// REDIS_URL: a
    plain redis:// connection has no TLS, and its CA would verify nothing."""
    if ca_cert is None:
        return
    if redis_url and urlsplit(redis_url).scheme != "rediss":
        raise SettingsError(
            "REDIS_CA_CERT is set but REDIS_URL is not a rediss:// (TLS) URL: "
            "the CA would verify nothing"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=ca_cert)
    except (ssl.SSLError, TypeError) as exc:
        raise SettingsError(f"REDIS_CA_CERT must hold PEM certificates: {exc}") from None


def _read_str(name: str, default: str | None) -> str:
    value = os.environ.get(name) or default
    if value is None:
        raise SettingsError(f"{name} must be set")
    return value


def _read_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    port = int(_number(name, raw, int))
    _check_bounds(name, port, 0, 65535)
    return port


def _number(name: str, raw: str, kind: type[int] | type[float]) -> float:
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what}, not {raw!r}") from None


def _check_bounds(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    low = -math.inf if minimum is None else minimum
    high = math.inf if maximum is None else maximum
    if not low <= value <= high:
        bounds = {
            (True, True): f"between {low:g} and {high:g}",
            (True, False): f"at least {low:g}",
            (False, True): f"at most {high:g}",
        }[(minimum is not None, maximum is not None)]
        raise SettingsError(f"{name} must be {bounds}, not {value}")

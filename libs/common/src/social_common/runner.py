"""Runs a service: its REST app (uvicorn) and its gRPC server (grpc.aio) in one
process and one event loop, sharing one Postgres pool and one Redis client.

On SIGTERM or SIGINT it drains: readiness turns to 503 and gRPC health to
NOT_SERVING, then after ``SHUTDOWN_DELAY_SECONDS`` both listeners close, the
requests and RPCs in flight get ``SHUTDOWN_GRACE_SECONDS`` to finish, and the
pools close last. A part of it that fails (the HTTP server, or a background
task such as the event consumer) drains it the same way, and the process exits
with 1 for its supervisor to start it again: never half a service.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
import redis.asyncio as aioredis
import uvicorn
import uvloop
from google.protobuf.descriptor import ServiceDescriptor
from psycopg_pool import AsyncConnectionPool
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from social_common.db import check_database, create_pool
from social_common.events import EventConsumer, Handler, OutboxRelay, consumer_name
from social_common.fleet import roster
from social_common.grpc import SERVING, add_health_and_reflection, create_server
from social_common.logging import configure_logging, get_logger
from social_common.redis import check_redis, create_redis
from social_common.rest import Check, Readiness, build_app
from social_common.revocation import RevokedSessions
from social_common.saturation import POOLS, sample_event_loop_lag
from social_common.settings import Settings
from social_common.tracing import configure_tracing, shutdown_tracing, traced_app, untraced

log = get_logger(__name__)


S = TypeVar("S", bound=Settings)


@dataclass(frozen=True)
class Resources(Generic[S]):
    """What a service's handlers share; built once by the runner."""

    settings: S
    redis: aioredis.Redis
    db: AsyncConnectionPool | None
    # Sessions whose access tokens every verifier refuses (followed by the runner).
    revoked: RevokedSessions


@dataclass(frozen=True)
class Servicer:
    """A gRPC service a process serves: its implementation, and the generated
    function and descriptor of the service it implements."""

    implementation: object
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    descriptor: ServiceDescriptor


@dataclass(frozen=True)
class Wiring:
    """What a service serves, built by its ``wire`` function without I/O.

    ``events`` are the handlers of the event types the service consumes (the
    roster's ``consumes``), run in a consumer group named after the service.
    ``background`` coroutines run while the service serves and are cancelled
    when it drains; ``close`` runs after the listeners have closed.
    """

    routes: Sequence[BaseRoute] = ()
    servicers: Sequence[Servicer] = ()
    events: Mapping[str, Handler] = field(default_factory=dict)
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = ()
    close: Callable[[], Awaitable[None]] | None = None
    # Dependencies /readyz checks besides PostgreSQL and Redis (e.g. S3).
    checks: Mapping[str, Check] = field(default_factory=dict)
    # ASGI middleware around the routes, inside the platform's request metrics.
    middleware: Sequence[Callable[[ASGIApp], ASGIApp]] = ()


@dataclass(frozen=True)
class ServiceSpec(Generic[S]):
    """A service: its name, its settings class, its wiring, and the extra
    commands of its command line (``python -m <name> <command>``). What it
    owns comes from the roster."""

    name: str
    settings_class: type[S]
    wire: Callable[[Resources[S]], Wiring]
    commands: Mapping[str, Callable[[S], None]] = field(default_factory=dict)

    @property
    def uses_database(self) -> bool:
        """Whether it keeps state in PostgreSQL (its own schema and role)."""
        service = roster().services.get(self.name)
        return service is not None and service.database

    @property
    def publishes_events(self) -> bool:
        """Whether it writes events through the transactional outbox (which
        then gets its table from the platform's migrations)."""
        service = roster().services.get(self.name)
        return service is not None and bool(service.publishes)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# Bytes a connection may hold in the kernel not yet sent (TCP_NOTSENT_LOWAT).
NOT_SENT_LIMIT = 16 * 1024


def _listen(host: str, port: int, *, share: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if share:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # Every connection accepted here (inheriting it) takes no more than this
    # of bytes not yet sent: writing waits instead, so a WebSocket client
    # that reads nothing fills the service's own queue (and is cut) rather
    # than megabytes of kernel buffer; throughput is not capped, as data in
    # flight does not count.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOT_SENT_LIMIT)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(spec: ServiceSpec[S], settings: S) -> bool:
    """Serves until SIGTERM/SIGINT, or until a part of it fails (its HTTP
    server or a background task), then drains. Returns whether it stopped
    because it was asked to."""
    redis = create_redis(settings.redis_url, settings.redis_ca_cert)
    db: AsyncConnectionPool | None = None
    checks: dict[str, Check] = {"redis": lambda: check_redis(redis)}
    if spec.uses_database:
        if settings.database_url is None:
            raise RuntimeError(f"{spec.name} uses a database but DATABASE_URL is not set")
        db = create_pool(
            settings.database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            name=spec.name,
        )
        await db.open(wait=False)
        pool = db
        checks["postgres"] = lambda: check_database(pool)
    resources = Resources(settings=settings, redis=redis, db=db, revoked=RevokedSessions(redis))
    checks["revocations"] = resources.revoked.check
    POOLS.watch(db, redis)

    wiring = spec.wire(resources)
    background = [*wiring.background, sample_event_loop_lag, resources.revoked.run]
    if wiring.events:
        consumer = EventConsumer(redis, spec.name, consumer_name(), wiring.events)
        background.append(consumer.run)
    if spec.publishes_events:
        assert db is not None
        assert settings.database_url is not None
        relay = OutboxRelay(
            spec.name, settings.database_url, db, redis, wait_replicas=settings.redis_wait_replicas
        )
        background.append(relay.run)
    readiness = Readiness(spec.name, {**checks, **wiring.checks})
    http_socket = _listen(settings.bind_host, settings.http_port, share=settings.share_ports)
    grpc_server = create_server(share_port=settings.share_ports)
    for servicer in wiring.servicers:
        servicer.add_to_server(servicer.implementation, grpc_server)
    service_names = [servicer.descriptor.full_name for servicer in wiring.servicers]
    health = add_health_and_reflection(grpc_server, service_names)
    for name in service_names:
        await health.set(name, SERVING)
    grpc_server.add_insecure_port(f"{settings.bind_host}:{settings.grpc_port}")

    app = traced_app(build_app(spec.name, wiring.routes, readiness, wiring.middleware))
    config = uvicorn.Config(
        app,
        lifespan="off",
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        # rest.client_ip reads the gateway's X-Forwarded-For entry itself.
        proxy_headers=False,
        # Longer than the gateway's upstream idle timeout (60 s): the gateway,
        # not us, closes idle pooled connections, so it never sends a request
        # down a connection we are closing.
        timeout_keep_alive=75,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace),
        # WebSocket frames are small JSON events: compressing them costs a
        # zlib context per direction on every socket for a few bytes saved
        # (the realtime service held 92 KiB per socket with it, 36 without).
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_seconds,
        ws_ping_timeout=settings.ws_ping_seconds,
    )
    http_server = _Server(config)

    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("forced_exit")  # a second signal: stop waiting for the drain
            os._exit(1)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    await grpc_server.start()
    http_task = asyncio.create_task(http_server.serve(sockets=[http_socket]))
    with untraced():
        tasks = [asyncio.create_task(run(), name=run.__qualname__) for run in background]
    log.info(
        "started",
        http=f"{settings.bind_host}:{settings.http_port}",
        grpc=f"{settings.bind_host}:{settings.grpc_port}",
        environment=settings.environment,
    )
    stop_requested = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait(
        {stop_requested, http_task, *tasks}, return_when=asyncio.FIRST_COMPLETED
    )
    stop_requested.cancel()
    # Anything but a signal ending the wait is a failure: the process drains
    # and exits non-zero, for its supervisor (Kubernetes, the local stack's)
    # to start it again, rather than serve without a part of itself.
    failed = stop_requested not in done
    if http_task in done:
        # uvicorn returned on its own: it could not serve, so neither do we.
        log.error("http_server_exited")
    for task in done & set(tasks):
        # Background tasks run until cancelled: ending at all is a failure.
        error = None if task.cancelled() else task.exception()
        log.error("background_task_failed", task=task.get_name(), exc_info=error)

    log.info("draining", delay=settings.shutdown_delay, grace=settings.shutdown_grace)
    readiness.draining = True
    await health.enter_graceful_shutdown()
    await asyncio.sleep(settings.shutdown_delay)
    http_server.should_exit = True
    await asyncio.gather(http_task, grpc_server.stop(settings.shutdown_grace))
    for task in tasks:
        task.cancel()
    if tasks:
        # A background task stuck in its cleanup must not hold the process.
        _, stuck = await asyncio.wait(tasks, timeout=settings.shutdown_grace)
        for task in stuck:
            log.warning("background_task_stuck", task=task.get_name())
    if wiring.close is not None:
        await wiring.close()
    if db is not None:
        await db.close()
    await redis.aclose()
    log.info("stopped", failed=failed)
    return not failed


def run_service(spec: ServiceSpec[S], settings: S | None = None) -> None:
    """Entry point of ``python -m <service>``: configure, serve, drain."""
    settings = settings or spec.settings_class.from_env(spec.name)
    configure_logging(spec.name, settings.log_level)
    # Before any pool, channel or server exists: tracing wraps their making.
    configure_tracing(spec.name)
    try:
        asked = uvloop.run(serve(spec, settings))
    finally:
        shutdown_tracing()
    if not asked:
        sys.exit(1)

"""The local stack: which processes, on which ports, started in which order."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import psycopg
from botocore.exceptions import ClientError
from psycopg import sql
from social_common.fleet import roster
from social_common.settings import DEV_POSTGRES_PORT, DEV_REDIS_PORT

from social_stack import processes, redis_cluster
from social_stack.gateway import Tracing, Upstream, dev_config, write_gateway
from social_stack.paths import binary, postgres_install_dir, redis_server_binary
from social_stack.postgres import data_home, install_for
from social_stack.processes import Component, Probe, StackError
from social_stack.supervisor import Backoff, Supervisor
from social_stack.web import DIST_DIR, WebConfig, bundle, render_web

DATABASE = "social"
S3_BUCKET = "social-media"
# The gateway's ceiling per client address in `make dev`/`make up`: wrk and
# k6 load the gateway from one address, so the local stack keeps the filter
# (its cost is measured) with a ceiling they never reach; the tests use the
# chart's 100 a second.
BENCH_CLIENT_RATE = 1_000_000
S3_REGION = "us-east-1"
DEV_S3_ACCESS_KEY = "social-dev"
DEV_S3_SECRET_KEY = "dev-social-s3-secret"  # noqa: S105  # local stack only
DEV_PG_ADMIN_PASSWORD = "dev-postgres"  # noqa: S105  # local stack only
# A local Redis Cluster's nodes; one Redis server is the first.
REDIS_NODES = ("redis", *(f"redis-{n}" for n in range(2, redis_cluster.NODES + 1)))
# What the services stand on: started first, stopped last.
BACKING = ("postgres", *REDIS_NODES, "seaweedfs")
# STACK_REDIS: the local stack's own Redis, one server or a cluster.
REDIS_MODES = ("single", "cluster")


def redis_cluster_asked(env: Mapping[str, str]) -> bool:
    """Whether ``env`` asks the stack for a Redis Cluster (STACK_REDIS)."""
    mode = env.get("STACK_REDIS") or "single"
    if mode not in REDIS_MODES:
        raise ValueError(f"STACK_REDIS is one of {', '.join(REDIS_MODES)}, not {mode!r}")
    return mode == "cluster"


@dataclass(frozen=True)
class Ports:
    envoy: int = 8000
    envoy_admin: int = 9901
    postgres: int = DEV_POSTGRES_PORT
    redis: int = DEV_REDIS_PORT
    # The other nodes of a local Redis Cluster (STACK_REDIS=cluster); the
    # first node listens on ``redis``.
    redis_cluster_peers: tuple[int, ...] = tuple(
        DEV_REDIS_PORT + 1 + i for i in range(redis_cluster.NODES - 1)
    )
    s3: int = 8333
    weed_master: int = 9333
    weed_volume: int = 8380
    weed_filer: int = 8888
    # The web client's static server and its admin: the roster's.
    web: int = roster().web.http_port
    web_admin: int = roster().web.admin_port
    # Each service's HTTP and gRPC ports: the roster's.
    services: dict[str, tuple[int, int]] = field(
        default_factory=lambda: {
            name: (service.ports.http, service.ports.grpc)
            for name, service in roster().services.items()
        }
    )

    @property
    def redis_cluster_nodes(self) -> list[int]:
        """The ports of a local Redis Cluster's nodes, the first node's first."""
        return [self.redis, *self.redis_cluster_peers]

    @classmethod
    def dev(cls) -> Ports:
        """The documented ports, each overridable as STACK_<NAME>_PORT (for a
        service, STACK_<SERVICE>_HTTP_PORT and STACK_<SERVICE>_GRPC_PORT)."""

        def port(name: str, default: int) -> int:
            return int(os.environ.get(f"STACK_{name.upper()}_PORT", default))

        base = cls()
        return cls(
            envoy=port("envoy", base.envoy),
            envoy_admin=port("envoy_admin", base.envoy_admin),
            postgres=port("postgres", base.postgres),
            redis=port("redis", base.redis),
            redis_cluster_peers=tuple(
                port(f"redis_{i + 2}", p) for i, p in enumerate(base.redis_cluster_peers)
            ),
            s3=port("s3", base.s3),
            web=port("web", base.web),
            web_admin=port("web_admin", base.web_admin),
            services={
                name: (port(f"{name}_http", http), port(f"{name}_grpc", grpc))
                for name, (http, grpc) in base.services.items()
            },
        )

    @classmethod
    def free(cls) -> Ports:
        """Ports free now: for a stack beside the dev one (tests)."""
        names = roster().names
        peers = redis_cluster.NODES - 1
        fixed = 10 + peers
        numbers = free_ports(fixed + 2 * len(names))
        services = {
            name: (numbers[fixed + 2 * i], numbers[fixed + 1 + 2 * i])
            for i, name in enumerate(names)
        }
        envoy, envoy_admin, postgres, redis, s3, master, volume, filer = numbers[:8]
        web, web_admin = numbers[8:10]
        return cls(
            envoy,
            envoy_admin,
            postgres,
            redis,
            tuple(numbers[10:fixed]),
            s3,
            master,
            volume,
            filer,
            web,
            web_admin,
            services,
        )


# SeaweedFS serves gRPC on port + 10000 of each of its ports.
_SEAWEEDFS_GRPC_OFFSET = 10000


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """Distinct free ports whose port + 10000 is free too, all below the
    kernel's ephemeral range: the source port of some outgoing connection
    (a busy machine opens thousands) cannot take one between this check and
    the component's start, as it could with ports the kernel hands out."""
    candidates = range(10000, _ephemeral_ports_start() - _SEAWEEDFS_GRPC_OFFSET)
    found: list[int] = []
    held: list[socket.socket] = []
    try:
        for port in random.sample(candidates, len(candidates)):
            if len(found) == count:
                break
            pair = [socket.socket(), socket.socket()]
            try:
                pair[0].bind(("127.0.0.1", port))
                pair[1].bind(("127.0.0.1", port + _SEAWEEDFS_GRPC_OFFSET))
            except OSError:
                for sock in pair:
                    sock.close()
                continue
            held += pair
            found.append(port)
    finally:
        for sock in held:
            sock.close()
    if len(found) < count:
        raise StackError(f"only {len(found)} of {count} free ports below the ephemeral range")
    return found


@dataclass(frozen=True)
class Endpoints:
    """Where everything in a running stack is; what the tests and the CLI print."""

    run_dir: str
    gateway_url: str
    envoy_admin_url: str
    database_admin_url: str
    database_urls: dict[str, str]
    redis_url: str
    s3_endpoint_url: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    services_http: dict[str, str]
    services_grpc: dict[str, str]
    # The web client's static server, where a built client is served (the
    # gateway sends it the pages): None when web/dist holds no build.
    web_url: str | None = None

    def service_env(self, name: str) -> dict[str, str]:
        """The environment a service process of this stack runs with."""
        env = {
            "APP_ENV": "dev",
            "HTTP_PORT": self.services_http[name].rsplit(":", 1)[1],
            "GRPC_PORT": self.services_grpc[name].rsplit(":", 1)[1],
            "REDIS_URL": self.redis_url,
            "SHUTDOWN_GRACE_SECONDS": "5",
            "PYTHONUNBUFFERED": "1",
        }
        env.update({f"{peer.upper()}_GRPC_ADDR": addr for peer, addr in self.services_grpc.items()})
        if name in self.database_urls:
            env["DATABASE_URL"] = self.database_urls[name]
        if roster().services[name].objects:
            env.update(
                S3_ENDPOINT_URL=self.s3_endpoint_url,
                S3_ACCESS_KEY_ID=self.s3_access_key,
                S3_SECRET_ACCESS_KEY=self.s3_secret_key,
                S3_BUCKET=self.s3_bucket,
                S3_REGION=S3_REGION,
                # Images are served by this stack's gateway.
                MEDIA_PUBLIC_BASE_URL=f"{self.gateway_url}/media",
            )
        return env


def with_credentials(url: str, user: str, password: str, database: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    path = f"/{database}" if database else parts.path
    return urlunsplit((parts.scheme, netloc, path, parts.query, parts.fragment))


class Stack:
    """Starts the stack under ``run_dir`` and stops exactly what it started.

    PostgreSQL, Redis and S3 come from ``DATABASE_URL`` (an administrator's
    URL), ``REDIS_URL`` and ``S3_ENDPOINT_URL`` when those are set; otherwise
    the stack starts its own.
    """

    def __init__(
        self,
        run_dir: Path,
        ports: Ports,
        *,
        tie_to_parent: bool,
        durable: bool = True,
        external: Mapping[str, str] | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        jwks_cache_seconds: int = 300,
        replicas: Mapping[str, int] | None = None,
        client_rate: int = BENCH_CLIENT_RATE,
    ) -> None:
        self.run_dir = run_dir
        self.ports = ports
        self.tie_to_parent = tie_to_parent
        self.durable = durable
        self.external = dict(os.environ if external is None else external)
        # Extra settings per service, over the stack's own (tests shorten intervals).
        self.service_env = {name: dict(env) for name, env in (service_env or {}).items()}
        # How long Envoy caches the JWKS; auth publishes new keys that long ahead.
        self.jwks_cache_seconds = jwks_cache_seconds
        # Requests a second the gateway takes from one client address.
        self.client_rate = client_rate
        self.redis_cluster = redis_cluster_asked(self.external)
        # Processes per service, as pods would be: they share the service's
        # ports and the kernel spreads connections among them.
        self.replicas = dict(replicas or {})
        unknown = set(self.replicas) - set(roster().services)
        if unknown or any(n < 1 for n in self.replicas.values()):
            raise ValueError(f"replicas: unknown services {sorted(unknown)} or a count below 1")

        self.components: list[Component] = []
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.endpoints = self._endpoints()
        # Restarts what exits unasked, once supervise() is called.
        self.supervisor: Supervisor | None = None
        # Starts, stops and saves from the supervisor's threads and the caller's.
        self._lock = threading.RLock()

    @property
    def state_file(self) -> Path:
        return self.run_dir / "stack.json"

    def _log(self, name: str) -> str:
        return str(self.run_dir / "logs" / f"{name}.log")

    def _endpoints(self) -> Endpoints:
        p = self.ports
        admin_url = self.external.get("DATABASE_URL") or (
            f"postgresql://postgres:{DEV_PG_ADMIN_PASSWORD}@127.0.0.1:{p.postgres}/{DATABASE}"
        )
        return Endpoints(
            run_dir=str(self.run_dir),
            gateway_url=f"http://127.0.0.1:{p.envoy}",
            envoy_admin_url=f"http://127.0.0.1:{p.envoy_admin}",
            database_admin_url=admin_url,
            database_urls={
                name: with_credentials(admin_url, name, f"dev-{name}")
                for name in roster().database_services
            },
            redis_url=self.external.get("REDIS_URL")
            or f"redis://127.0.0.1:{p.redis}/0{'?cluster=true' if self.redis_cluster else ''}",
            s3_endpoint_url=self.external.get("S3_ENDPOINT_URL") or f"http://127.0.0.1:{p.s3}",
            s3_access_key=self.external.get("S3_ACCESS_KEY_ID", DEV_S3_ACCESS_KEY),
            s3_secret_key=self.external.get("S3_SECRET_ACCESS_KEY", DEV_S3_SECRET_KEY),
            s3_bucket=self.external.get("S3_BUCKET", S3_BUCKET),
            services_http={n: f"127.0.0.1:{h}" for n, (h, _) in p.services.items()},
            services_grpc={n: f"127.0.0.1:{g}" for n, (_, g) in p.services.items()},
            web_url=f"http://127.0.0.1:{p.web}" if (DIST_DIR / "index.html").is_file() else None,
        )

    # -- starting -----------------------------------------------------------

    def start(self, timeout: float = 90.0) -> Endpoints:
        """Starts everything and waits until it is healthy; on failure stops
        what it started and raises :class:`StackError` with the log tail."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        processes.raise_open_files_limit()  # inherited by what is started
        try:
            backing = [
                c for c in (self._postgres(), *self._redis(), self._seaweedfs()) if c is not None
            ]
            self._launch(backing, timeout)
            if self.redis_cluster and not self.external.get("REDIS_URL"):
                redis_cluster.form(self.ports.redis_cluster_nodes, timeout)
            self._bootstrap()
            front = [
                *(
                    self._service(name, replica)
                    for name in roster().names
                    for replica in range(self.replicas.get(name, 1))
                ),
                *([self._web()] if self.endpoints.web_url else []),
                self._envoy(),
            ]
            self._launch(front, timeout)
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def _launch(self, components: list[Component], timeout: float) -> None:
        for component in components:
            self.processes[component.name] = processes.start(
                component, tie_to_parent=self.tie_to_parent
            )
            self.components.append(component)
            self._save()
        processes.wait_healthy(components, self.processes, timeout)

    def _postgres(self, pginstall: Path | None = None) -> Component | None:
        """PostgreSQL from ``pginstall`` (pgserver's by default), its data in the run
        dir; as root it runs as nobody, and what nobody cannot reach is placed where
        it can (see :mod:`social_stack.postgres`)."""
        if self.external.get("DATABASE_URL"):
            return None
        pginstall = postgres_install_dir() if pginstall is None else pginstall
        home = self.run_dir
        uid = processes.unprivileged_uid()
        if uid is not None:
            pginstall = install_for(pginstall, uid)
            home = data_home(self.run_dir, uid)
        bin_dir = pginstall / "bin"
        data = home / "postgres"
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            password_file = home / "pg-admin-password"
            password_file.write_text(DEV_PG_ADMIN_PASSWORD)
            if uid is not None:
                os.chown(data, uid, -1)
                os.chown(password_file, uid, -1)
            processes.run_once(
                [
                    str(bin_dir / "initdb"),
                    "-D", str(data), "-U", "postgres", "--pwfile", str(password_file),
                    "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
                    "--encoding=UTF8", "--locale=C", "--no-instructions",
                ],
                run_as_uid=uid,
                what="initdb",
            )  # fmt: skip
            password_file.unlink()
        settings = [
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "max_connections=300",
            "shared_buffers=128MB",
        ]
        if not self.durable:
            # Test stacks are thrown away: trade crash safety for speed.
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        argv = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(self.ports.postgres)]
        for setting in settings:
            argv += ["-c", setting]
        return Component(
            name="postgres",
            argv=argv,
            log=self._log("postgres"),
            probe=Probe("tcp", f"127.0.0.1:{self.ports.postgres}"),
            # SIGINT is PostgreSQL's fast shutdown; SIGTERM waits for clients to leave.
            stop_signal=signal.SIGINT,
            run_as_uid=uid,
            ports=[self.ports.postgres],
        )

    def _redis(self) -> list[Component]:
        """One Redis server, or the nodes of a cluster (formed once they run)."""
        if self.external.get("REDIS_URL"):
            return []
        persistence = (
            ["--appendonly", "yes"] if self.durable else ["--save", "", "--appendonly", "no"]
        )
        if not self.redis_cluster:
            return [
                self._redis_node("redis", self.ports.redis, self.run_dir / "redis", persistence)
            ]
        return [
            self._redis_node(
                name,
                port,
                self.run_dir / "redis-cluster" / name,
                [*persistence, *redis_cluster.node_arguments("nodes.conf", port)],
            )
            for name, port in zip(REDIS_NODES, self.ports.redis_cluster_nodes, strict=True)
        ]

    def _redis_node(self, name: str, port: int, data: Path, arguments: list[str]) -> Component:
        data.mkdir(parents=True, exist_ok=True)
        where = ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
        return Component(
            name=name,
            argv=[redis_server_binary(), *where, "--daemonize", "no", *arguments],
            log=self._log(name),
            probe=Probe("redis", f"127.0.0.1:{port}"),
            ports=[port],
        )

    def _seaweedfs(self) -> Component | None:
        if self.external.get("S3_ENDPOINT_URL"):
            return None
        p = self.ports
        data = self.run_dir / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        identities = data / "s3.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "social",
                            "credentials": [
                                {"accessKey": DEV_S3_ACCESS_KEY, "secretKey": DEV_S3_SECRET_KEY}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        },
                        # The gateway's /media route reads images without credentials.
                        {"name": "anonymous", "actions": [f"Read:{self.endpoints.s3_bucket}"]},
                    ]
                }
            )
        )
        return Component(
            name="seaweedfs",
            argv=[
                binary("weed"),
                "server",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={p.weed_master}",
                f"-master.port.grpc={p.weed_master + 10000}",
                f"-volume.port={p.weed_volume}",
                f"-volume.port.grpc={p.weed_volume + 10000}",
                "-filer",
                f"-filer.port={p.weed_filer}",
                f"-filer.port.grpc={p.weed_filer + 10000}",
                "-s3",
                f"-s3.port={p.s3}",
                f"-s3.port.grpc={p.s3 + 10000}",
                f"-s3.config={identities}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                # Room for 10 GB of images, with deleted ones reclaimed every
                # minute rather than every 14 (repeated benchmarks fill it fast).
                "-master.volumeSizeLimitMB=256",
                "-volume.max=40",
                "-master.vacuumIntervalSeconds=60",
                "-iam=false",
            ],
            log=self._log("seaweedfs"),
            # It takes 10 to 20 s to exit on SIGTERM or SIGINT: its data is
            # synced by then in a dev stack, so it is not waited for long.
            stop_timeout=3.0,
            # Unauthenticated requests are refused with 403: the gateway is up.
            probe=Probe("http", f"http://127.0.0.1:{p.s3}/", any_status=True),
        )

    def _bootstrap(self) -> None:
        """The database, one role and schema per service, their migrations, the bucket."""
        admin = self.endpoints.database_admin_url
        server_admin = with_credentials(
            admin,
            urlsplit(admin).username or "postgres",
            urlsplit(admin).password or "",
            "postgres",
        )
        _ensure_database(server_admin, DATABASE)
        # What each service's migration Job runs in Kubernetes: its own command
        # line, which makes its role and schema with the administrator's URL.
        # One after another: concurrent GRANTs on the database collide.
        for name in roster().database_services:
            processes.run_once(
                [sys.executable, "-m", name, "migrate"],
                env={
                    "APP_ENV": "dev",
                    "DATABASE_URL": self.endpoints.database_urls[name],
                    "DATABASE_ADMIN_URL": admin,
                },
                what=f"{name} migrate",
            )
        _ensure_bucket(self.endpoints)

    def _service(self, name: str, replica: int = 0) -> Component:
        shared = self.replicas.get(name, 1) > 1
        component = name if replica == 0 else f"{name}-{replica + 1}"
        return Component(
            name=component,
            argv=[sys.executable, "-m", name],
            log=self._log(component),
            probe=Probe("http", f"http://{self.endpoints.services_http[name]}/readyz"),
            env={
                **self.endpoints.service_env(name),
                "JWKS_CACHE_SECONDS": str(self.jwks_cache_seconds),
                **({"SHARE_PORTS": "1"} if shared else {}),
                # Each of the cluster's primaries has a replica: events wait for it.
                **({"REDIS_WAIT_REPLICAS": "1"} if self.redis_cluster else {}),
                # OpenTelemetry's settings, as the gateway's tracing follows them.
                **{k: v for k, v in self.external.items() if k.startswith("OTEL_")},
                **self.service_env.get(name, {}),
            },
            # The first replica checks the ports are free; the others join it.
            ports=list(self.ports.services[name]) if replica == 0 else [],
        )

    def _envoy(self) -> Component:
        service_ports = {n: h for n, (h, _) in self.ports.services.items()}
        s3 = urlsplit(self.endpoints.s3_endpoint_url)
        config = dev_config(
            self.ports.envoy,
            self.ports.envoy_admin,
            service_ports,
            self.run_dir / "gateway" / "openapi.json",
            objects=Upstream(s3.hostname or "127.0.0.1", s3.port or 80),
            bucket=self.endpoints.s3_bucket,
            jwks_cache_seconds=self.jwks_cache_seconds,
            web=Upstream("127.0.0.1", self.ports.web) if self.endpoints.web_url else None,
            tracing=Tracing.from_env(self.external),
            client_rate=self.client_rate,
        )
        envoy_yaml = write_gateway(config, self.run_dir / "gateway")
        return Component(
            name="envoy",
            argv=[
                binary("envoy"),
                "-c",
                str(envoy_yaml),
                "--disable-hot-restart",
                "--log-level",
                "warn",
            ],
            log=self._log("envoy"),
            probe=Probe("http", f"http://127.0.0.1:{self.ports.envoy_admin}/ready"),
            ports=[self.ports.envoy, self.ports.envoy_admin],
        )

    def _web(self) -> Component:
        """The web client's static server, for the bundle in web/dist as built."""
        config = WebConfig("127.0.0.1", self.ports.web, "127.0.0.1", self.ports.web_admin)
        web_yaml = self.run_dir / "web" / "envoy.yaml"
        web_yaml.parent.mkdir(parents=True, exist_ok=True)
        web_yaml.write_text(render_web(config, bundle(DIST_DIR)))
        return Component(
            name="web",
            argv=[binary("envoy"), "-c", str(web_yaml), "--disable-hot-restart", "-l", "warn"],
            log=self._log("web"),
            probe=Probe("http", f"http://127.0.0.1:{self.ports.web_admin}/ready"),
            ports=[self.ports.web, self.ports.web_admin],
        )

    # -- state --------------------------------------------------------------

    def supervise(self, backoff: Backoff | None = None) -> Supervisor:
        """From now on, a component that exits unasked is started again (with
        back-off, see :mod:`social_stack.supervisor`), until :meth:`stop`.
        This process is recorded as the stack's supervisor: ``make down``
        signals it to stop the stack, ``make status`` shows it."""
        supervisor = Supervisor(self._start_again, self._save, backoff)
        with self._lock:
            self.supervisor = supervisor
            self._save()
            watched = [(c, self.processes[c.name]) for c in self.components]
        # Never under our lock: the supervisor calls back into it under its own.
        for component, process in watched:
            supervisor.watch(component, process)
        return supervisor

    def _start_again(self, component: Component, reason: str) -> subprocess.Popen[bytes]:
        with self._lock:
            process = processes.start(component, tie_to_parent=self.tie_to_parent, again=reason)
            self.processes[component.name] = process
            return process

    def _held(self, name: str) -> contextlib.AbstractContextManager[None]:
        return self.supervisor.held(name) if self.supervisor else contextlib.nullcontext()

    def restart(self, name: str, timeout: float = 90.0) -> None:
        """Stops the component ``name`` if it still runs (SIGTERM, as an
        orchestrator would) and starts it again as it was; waits until it is
        healthy. Clients of it must reconnect on their own (tests of that).
        The supervisor, if any, keeps its hands off meanwhile."""
        with self.stopped(name, timeout):
            pass

    @contextlib.contextmanager
    def stopped(
        self, name: str, timeout: float = 90.0, *, crash: bool = False
    ) -> Iterator[Component]:
        """The component ``name`` stopped for the duration (the supervisor
        leaves it down), then started again and waited for until healthy.
        For tests of a dependency that is away; ``crash``: killed (SIGKILL),
        not asked to stop."""
        component = self._component(name)
        with self._held(name):
            processes.stop(
                [dataclasses.replace(component, stop_signal=signal.SIGKILL) if crash else component]
            )
            try:
                yield component
            finally:
                process = self._start_again(component, "started again by the stack")
                if self.supervisor is not None:
                    self.supervisor.watch(component, process)
                self._save()
            processes.wait_healthy([component], self.processes, timeout)

    def _component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def _save(self) -> None:
        with self._lock:
            own = [c.record() for c in self.components]
            supervisor = (
                {"pid": os.getpid(), "start_time": processes.start_time_of(os.getpid())}
                if self.supervisor is not None
                else None
            )

            def replace(state: dict[str, Any] | None) -> dict[str, Any]:
                # Components others recorded in the same file (make observability) stay.
                names = {c["name"] for c in own}
                others = [c for c in (state or {}).get("components", []) if c["name"] not in names]
                return {
                    "endpoints": asdict(self.endpoints),
                    "components": own + others,
                    **({"supervisor": supervisor} if supervisor else {}),
                }

            update_state(self.run_dir, replace)

    def stop(self) -> None:
        supervisor = self.supervisor
        if supervisor is not None:
            supervisor.close()
        with self._lock:
            _stop_in_order(self.components)
            self.components = []
            self.state_file.unlink(missing_ok=True)
        if supervisor is not None:
            supervisor.join(timeout=10)


@contextlib.contextmanager
def _state_lock(run_dir: Path) -> Iterator[None]:
    """Held while ``stack.json`` is read and rewritten: the stack's supervisor
    and ``make observability`` both change it."""
    with (run_dir / "stack.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def update_state(
    run_dir: Path, change: Callable[[dict[str, Any] | None], dict[str, Any] | None]
) -> None:
    """Rewrites the run dir's ``stack.json`` with what ``change`` makes of it
    (None: the file is absent, or has gone); no other writer interleaves."""
    state_file = run_dir / "stack.json"
    with _state_lock(run_dir):
        try:
            state: dict[str, Any] | None = json.loads(state_file.read_text())
        except (OSError, ValueError):
            state = None
        new = change(state)
        if new is None:
            return
        # Written aside then renamed: a runner killed mid-write leaves the old file.
        partial = state_file.with_suffix(".json.partial")
        partial.write_text(json.dumps(new, indent=2))
        partial.replace(state_file)


def load_state(run_dir: Path) -> tuple[Endpoints, list[Component]] | None:
    try:
        state = json.loads((run_dir / "stack.json").read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        raise StackError(f"{run_dir / 'stack.json'} is not valid JSON: remove it") from None
    components = [Component.from_record(c) for c in state["components"]]
    known = {f.name for f in fields(Endpoints)}
    endpoints = Endpoints(**{k: v for k, v in state["endpoints"].items() if k in known})
    return endpoints, components


def load_supervisor(run_dir: Path) -> tuple[int, str] | None:
    """The pid and start time of the process supervising the stack recorded
    under ``run_dir``, if one is recorded."""
    try:
        record = json.loads((run_dir / "stack.json").read_text()).get("supervisor")
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    return int(record.get("pid", 0)), str(record.get("start_time", ""))


def stop_recorded(run_dir: Path, timeout: float = 60.0) -> list[str]:
    """Stops the stack recorded under ``run_dir`` (by ``make up``); returns what it stopped.

    Its supervisor, when alive, is asked first (SIGTERM): it stops what it
    supervises in order and exits. Whatever still runs after that (it was
    killed, or a part was recorded by another command) is stopped here."""
    loaded = load_state(run_dir)
    if loaded is None:
        return []
    _, components = loaded
    running = [c.name for c in components if processes.is_running(c)]
    supervisor = load_supervisor(run_dir)
    if supervisor is not None and processes.is_alive(*supervisor):
        _stop_and_wait(supervisor[0], timeout)
    # The supervisor may have restarted some since: the latest record too.
    latest = load_state(run_dir)
    _stop_in_order(components + (latest[1] if latest else []))
    (run_dir / "stack.json").unlink(missing_ok=True)
    return running


def _stop_and_wait(pid: int, timeout: float) -> None:
    """SIGTERM to ``pid`` (not our child), then waits for it to exit."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(handle, signal.SIGTERM)
        # A pidfd turns readable when its process exits.
        select.select([handle], [], [], timeout)
    finally:
        os.close(handle)


def _stop_in_order(components: list[Component]) -> None:
    """The front (services, Envoy) first, then what they depend on."""
    front = [c for c in components if c.name not in BACKING]
    processes.stop(front)
    processes.stop([c for c in components if c not in front])


def _ensure_database(server_admin_url: str, database: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg.connect(server_admin_url, autocommit=True, connect_timeout=2)
            break
        except psycopg.OperationalError:
            # The port accepts connections a moment before the server does.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _ensure_bucket(endpoints: Endpoints) -> None:
    client = boto3.client(
        "s3",
        endpoint_url=endpoints.s3_endpoint_url,
        aws_access_key_id=endpoints.s3_access_key,
        aws_secret_access_key=endpoints.s3_secret_key,
        region_name=S3_REGION,
    )
    try:
        client.create_bucket(Bucket=endpoints.s3_bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise


__all__ = [
    "BACKING",
    "Endpoints",
    "Ports",
    "Stack",
    "StackError",
    "load_state",
    "load_supervisor",
    "stop_recorded",
    "update_state",
]

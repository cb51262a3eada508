"""Faults to inject into a running stack, for tests of how the fleet bears them.

:class:`FaultProxy` is a TCP proxy (asyncio, in a thread of its own) put
between a service and what it talks to (PostgreSQL, Redis, a gRPC peer): it
forwards bytes as they come until told to add latency, stall, refuse new
connections or reset the open ones. The kernel here has no netem; this is
the part of a bad network a process can see: late bytes, no bytes, closed
and reset connections.

:class:`GrpcFaults` is an Envoy with its fault filter put in front of a gRPC
peer: it speaks HTTP/2, so its faults are per call, not per connection. It
fails a share of the calls with a gRPC status, or holds them a while before
passing them on, as switched through Envoy's runtime while it runs.

A service is pointed at a proxy through its settings (``service_env`` of a
:class:`~social_stack.local.Stack` of the test's own, whose PostgreSQL,
Redis and S3 are the session stack's: :func:`backing_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from social_stack import processes
from social_stack.local import Endpoints, free_ports
from social_stack.paths import binary
from social_stack.processes import Component, Probe

T = TypeVar("T")


class FaultProxy:
    """Forwards connections from ``127.0.0.1:<port>`` to ``upstream``
    (``host:port``), with faults switched on and off while it runs."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self.port = free_ports(1)[0]
        # Seconds each chunk of bytes waits before it is passed on, both ways.
        self.latency = 0.0
        # New connections are accepted and closed at once (a reset), as by a
        # server that is gone or a firewall that drops them.
        self.refusing = False
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def address(self) -> str:
        """``host:port`` to give the service instead of the upstream's."""
        return f"127.0.0.1:{self.port}"

    def url(self, url: str) -> str:
        """``url`` (postgresql://…, redis://…) with its host and port this proxy's."""
        parts = urlsplit(url)
        credentials, _, _ = parts.netloc.rpartition("@")
        netloc = f"{credentials}@{self.address}" if credentials else self.address
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def close(self) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- faults ---------------------------------------------------------------

    def stall(self) -> None:
        """From now on no byte passes, either way, on any connection (they
        stay open): a peer that stopped answering, a link that stopped."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def flow(self) -> None:
        """Bytes pass again (what was held first, in order)."""
        self._loop.call_soon_threadsafe(self._flowing.set)

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        self.stall()
        try:
            yield
        finally:
            self.flow()

    def reset(self) -> int:
        """Resets every open connection (an RST to both ends); how many."""
        return self._call(self._reset())

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        return len(self._open)

    # -- the loop's side ------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset()

    async def _reset(self) -> int:
        pairs = list(self._open)
        for pair in pairs:
            for writer in pair:
                _abort(writer)
        return len(pairs)

    async def _serve(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self.refusing:
            _abort(client)
            return
        try:
            upstream_reader, upstream = await asyncio.open_connection(*self._upstream)
        except OSError:
            _abort(client)
            return
        pair = (client, upstream)
        self._open.add(pair)
        try:
            # Either way ending (or failing) ends the connection both ways.
            pumps = [
                asyncio.create_task(self._pump(client_reader, upstream)),
                asyncio.create_task(self._pump(upstream_reader, client)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
        finally:
            self._open.discard(pair)
            for writer in pair:
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Passes what ``reader`` gets to ``writer``, each chunk ``latency``
        after it came (chunks in flight together, as on a long link), in order."""
        due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        sender = asyncio.create_task(self._send(due, writer))
        loop = asyncio.get_running_loop()
        try:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    due.put_nowait((loop.time() + self.latency, data))
            await due.put((0.0, b""))  # the end, after what is still due
            await sender
        finally:
            sender.cancel()

    async def _send(
        self, due: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionError, OSError):
            while True:
                at, data = await due.get()
                if not data:
                    return
                if at > loop.time():
                    await asyncio.sleep(at - loop.time())  # the fault itself: late bytes
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Closes with an RST, not a FIN: as a connection a network lost."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _grpc_faults_config(port: int, admin_port: int, host: str, upstream_port: int) -> Any:
    """Envoy's config: calls on ``port`` to the peer, through the fault filter,
    whose faults are off until the runtime (an admin layer) gives them a
    share: fault.http.abort.abort_percent, fault.http.delay.fixed_delay_percent."""

    def address(host: str, port: int) -> dict[str, Any]:
        return {"socket_address": {"address": host, "port_value": port}}

    api = "type.googleapis.com/envoy.extensions"
    off = {"numerator": 0, "denominator": "HUNDRED"}
    faults = {
        "@type": f"{api}.filters.http.fault.v3.HTTPFault",
        "abort": {"grpc_status": 14, "percentage": off},
        "delay": {"fixed_delay": "1s", "percentage": off},
    }
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "peer", "timeout": "0s"}}]
    manager = {
        "@type": f"{api}.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "calls",
        "codec_type": "HTTP2",
        "http_filters": [
            {"name": "envoy.filters.http.fault", "typed_config": faults},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": f"{api}.filters.http.router.v3.Router"},
            },
        ],
        "route_config": {"virtual_hosts": [{"name": "peer", "domains": ["*"], "routes": routes}]},
    }
    listener = {
        "name": "calls",
        "address": address("127.0.0.1", port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    peer = {"endpoint": {"address": address(host, upstream_port)}}
    cluster = {
        "name": "peer",
        "type": "STATIC",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": f"{api}.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {"cluster_name": "peer", "endpoints": [{"lb_endpoints": [peer]}]},
    }
    return {
        "admin": {"address": address("127.0.0.1", admin_port)},
        "layered_runtime": {"layers": [{"name": "switches", "admin_layer": {}}]},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


class GrpcFaults:
    """An Envoy in front of the gRPC peer at ``upstream`` (``host:port``),
    passing every call on until told to fail or delay a share of them. It is
    a component as the stack's own Envoy is (started, probed and stopped by
    social_stack.processes), tied to this process."""

    def __init__(self, upstream: str, run_dir: Path) -> None:
        host, upstream_port = upstream.rsplit(":", 1)
        self.port, self._admin_port = free_ports(2)
        config = run_dir / f"grpc-faults-{self.port}.json"
        config.write_text(
            json.dumps(_grpc_faults_config(self.port, self._admin_port, host, int(upstream_port)))
        )
        self._component = Component(
            name="grpc-faults",
            argv=[binary("envoy"), "-c", str(config), "--disable-hot-restart", "-l", "warn"],
            log=str(run_dir / f"grpc-faults-{self.port}.log"),
            probe=Probe("http", f"http://127.0.0.1:{self._admin_port}/ready"),
            ports=[self.port, self._admin_port],
        )

    @property
    def address(self) -> str:
        """``host:port`` to give the caller instead of the peer's."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> GrpcFaults:
        process = processes.start(self._component, tie_to_parent=True)
        try:
            processes.wait_healthy([self._component], {self._component.name: process}, timeout)
        except processes.StackError:
            self.close()
            raise
        return self

    def fail(self, percent: int) -> None:
        """Answers ``percent`` of the calls with UNAVAILABLE without passing them on."""
        self._switch({"fault.http.abort.abort_percent": percent})

    def delay(self, percent: int, seconds: float) -> None:
        """Holds ``percent`` of the calls ``seconds`` before passing them on."""
        self._switch(
            {
                "fault.http.delay.fixed_delay_percent": percent,
                "fault.http.delay.fixed_duration_ms": round(seconds * 1000),
            }
        )

    def clear(self) -> None:
        self._switch(
            {"fault.http.abort.abort_percent": 0, "fault.http.delay.fixed_delay_percent": 0}
        )

    def close(self) -> None:
        processes.stop([self._component])

    def _switch(self, values: dict[str, int]) -> None:
        url = f"http://127.0.0.1:{self._admin_port}/runtime_modify?{urllib.parse.urlencode(values)}"
        try:
            with processes.OPENER.open(urllib.request.Request(url, method="POST"), timeout=2):
                pass
        except (urllib.error.URLError, OSError) as exc:
            raise RuntimeError(f"the fault-injecting Envoy refused {values}: {exc}") from exc


def backing_of(endpoints: Endpoints) -> dict[str, str]:
    """The settings that make a :class:`~social_stack.local.Stack` use the
    PostgreSQL, Redis and S3 of ``endpoints`` instead of starting its own."""
    return {
        "DATABASE_URL": endpoints.database_admin_url,
        "REDIS_URL": endpoints.redis_url,
        "S3_ENDPOINT_URL": endpoints.s3_endpoint_url,
        "S3_ACCESS_KEY_ID": endpoints.s3_access_key,
        "S3_SECRET_ACCESS_KEY": endpoints.s3_secret_key,
        "S3_BUCKET": endpoints.s3_bucket,
    }


__all__ = ["FaultProxy", "GrpcFaults", "backing_of"]

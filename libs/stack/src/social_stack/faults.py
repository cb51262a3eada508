"""Faults to inject into a running stack, for tests of how the fleet bears them.

:class:`FaultProxy` is a TCP proxy (asyncio, in a thread of its own) put
between a service and what it talks to (PostgreSQL, Redis, a gRPC peer): it
forwards bytes as they come until told to add latency, stall, refuse new
connections or reset the open ones. The kernel here has no netem; this is
the part of a bad network a process can see: late bytes, no bytes, closed
and reset connections.

A service is pointed at a proxy through its settings (``service_env`` of a
:class:`~social_stack.local.Stack` of the test's own, whose PostgreSQL,
Redis and S3 are the session stack's: :func:`backing_of`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from social_stack.local import Endpoints, free_ports

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


__all__ = ["FaultProxy", "backing_of"]

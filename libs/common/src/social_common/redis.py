"""Redis through redis-py's asyncio client (hiredis parses replies when installed)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

# A command whose connection broke (Redis restarted, or failed over, since it
# was last used) is sent again on a new one, twice at most and within a
# tenth of a second: a pooled connection gone stale costs no request a 503,
# while Redis that stays down is still reported at once. Not on timeouts,
# which would multiply the wait.
_RETRY = Retry(
    ExponentialWithJitterBackoff(base=0.01, cap=0.1),
    retries=2,
    supported_errors=(RedisConnectionError,),
)

# How long a command's reply may take; a blocking read (XREAD BLOCK) must
# ask to wait less, or every quiet read ends in a timeout.
SOCKET_TIMEOUT_S = 5.0

# What a Redis that is away (restarting, failing over, unreachable) raises:
# callers that can do without it catch this and carry on.
UNAVAILABLE = (RedisError, OSError)


class _Connection(aioredis.Connection):
    """A connection whose write to a transport already closed (a reset the
    connection has not noticed yet) fails as a broken connection, which the
    retry above sends again on a new one. uvloop raises RuntimeError there
    ("unable to perform operation on <TCPTransport closed=True>"), which
    redis-py would pass on as is: a 500 instead of a retried command."""

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        try:
            await super()._send_packed_command(command)
        except RuntimeError as exc:
            raise ConnectionResetError(str(exc)) from exc


class _SSLConnection(aioredis.SSLConnection, _Connection):
    """:class:`_Connection` over TLS (rediss://)."""


def create_redis(url: str, ca_cert: str | None = None) -> aioredis.Redis:
    """A client of the Redis at ``url``. ``ca_cert``: for a rediss:// URL, the
    PEM of the CA certificate(s) that signed the server's certificate (such as
    Memorystore's own CA), trusted besides the system's trust store; the
    server's name (or address) is still checked against its certificate."""
    tls: dict[str, Any] = {}
    if ca_cert is not None:
        if urlsplit(url).scheme != "rediss":
            raise ValueError("a CA certificate needs a rediss:// (TLS) URL")
        tls["ssl_ca_data"] = ca_cert
    # At most 256 connections per process; past that a command waits (up to
    # 2 s) for one to be free instead of failing: a burst of requests queues
    # briefly rather than answering 503. A pool handed to the client brings
    # its own retry policy (the client's default applies only to pools it
    # makes), so it is given here.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=256,
        timeout=2.0,
        socket_connect_timeout=2.0,
        socket_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
        retry=_RETRY,
        **tls,
    )
    # The URL chose the class (TLS or not): its variant that retries a write
    # to a closed transport.
    if issubclass(pool.connection_class, aioredis.SSLConnection):
        pool.connection_class = _SSLConnection
    elif pool.connection_class is aioredis.Connection:
        pool.connection_class = _Connection
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


def as_text(value: bytes | str) -> str:
    """A reply of a client that does not decode responses, as text."""
    return value.decode() if isinstance(value, bytes) else value


async def check_redis(client: aioredis.Redis) -> None:
    """Raises when Redis does not answer PING."""
    await client.ping()

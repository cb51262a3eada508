"""Redis through redis-py's asyncio client (hiredis parses replies when installed)."""

from __future__ import annotations

import redis.asyncio as aioredis


def create_redis(url: str) -> aioredis.Redis:
    # At most 256 connections per process; past that a command waits (up to
    # 2 s) for one to be free instead of failing: a burst of requests queues
    # briefly rather than answering 503.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=256,
        timeout=2.0,
        socket_connect_timeout=2.0,
        socket_timeout=5.0,
        health_check_interval=30,
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


def as_text(value: bytes | str) -> str:
    """A reply of a client that does not decode responses, as text."""
    return value.decode() if isinstance(value, bytes) else value


async def check_redis(client: aioredis.Redis) -> None:
    """Raises when Redis does not answer PING."""
    await client.ping()

"""PostgreSQL through psycopg 3: one async pool per service process.

The pool connects as the service's own role, whose search_path is its own
schema (set by :func:`social_common.migrations.ensure_service_schema`), so SQL
names tables without a schema prefix and cannot reach another service's.
"""

from __future__ import annotations

import functools
import select
from datetime import UTC, datetime

from psycopg import AsyncConnection, OperationalError
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg_pool import AsyncConnectionPool

# Statements run this many times on one connection become server-side prepared.
PREPARE_THRESHOLD = 2


@functools.cache
def _in_utc(base: type[Loader]) -> type[Loader]:
    """``base`` (psycopg's timestamptz loader, in C where psycopg_binary is
    installed: it cannot be subclassed) with its moments turned to UTC."""

    class InUtc(Loader):
        format = base.format

        def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
            super().__init__(oid, context)
            self._base = base(oid, context)

        def load(self, data: Buffer) -> datetime:
            moment: datetime = self._base.load(data)
            return moment.astimezone(UTC)

    return InUtc


async def _configure(conn: AsyncConnection) -> None:
    conn.prepare_threshold = PREPARE_THRESHOLD
    # Moments come back in UTC whatever the session's TimeZone (clients see
    # them with a "Z"), without a SET a transaction pooler would not keep.
    oid = conn.adapters.types["timestamptz"].oid
    for format_ in (Format.TEXT, Format.BINARY):
        base = conn.adapters.get_loader(oid, format_)
        if base is not None:
            conn.adapters.register_loader(oid, _in_utc(base))


async def _check(conn: AsyncConnection) -> None:
    """Raises when a pooled connection is gone (the server restarted, or
    failed over, since it was last used), so the pool hands out another
    instead of a request failing on it with a 503.

    An idle connection has nothing to read unless the server spoke: a server
    that ended the session sends its error and closes. Only then is the
    connection asked for real (a round trip, which also tells a harmless
    notice from a closed session); the usual check is one system call."""
    if conn.closed:
        raise OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    if readable:
        await AsyncConnectionPool.check_connection(conn)


# A server that vanishes without a reset (failed over, partitioned away) is
# noticed in seconds, not in the kernel's hours: data unacknowledged for 10 s
# ends the connection, and a connection idle 10 s (awaiting a long answer,
# say) is probed every 5 s and ended after 3 probes unanswered. A query on it
# then fails (a 503), and the pool replaces the connection. A server that is
# alive but slow answers the probes, so a slow query is not cut.
DEAD_PEER_DETECTION = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


def create_pool(conninfo: str, *, min_size: int, max_size: int, name: str) -> AsyncConnectionPool:
    """An unopened pool; the runner opens it without waiting, so a service
    starts (and reports not ready) while its database is still unreachable.

    Its connections are in autocommit: a statement is its own transaction,
    one round trip (not BEGIN, the statement and COMMIT: three), and work
    that must be atomic says so with ``conn.transaction()``."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        configure=_configure,
        check=_check,
        kwargs={
            "application_name": name,
            "connect_timeout": 5,
            "autocommit": True,
            **DEAD_PEER_DETECTION,
        },
        timeout=5.0,
    )


async def check_database(pool: AsyncConnectionPool) -> None:
    """Raises when the pool cannot hand out a working connection."""
    async with pool.connection() as conn:
        await conn.execute("SELECT 1")

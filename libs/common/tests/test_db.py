"""The service's PostgreSQL pool, on the stack's PostgreSQL: opened lazily,
named, connected as the service's role in its schema, preparing repeated statements."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import UTC, datetime, timedelta

import pytest
from psycopg.pq import TransactionStatus
from social_common.db import (
    DEAD_PEER_DETECTION,
    PREPARE_THRESHOLD,
    check_database,
    create_pool,
)
from social_stack.local import Endpoints


def test_the_pool_is_made_unopened_and_opening_it_does_not_wait_for_the_database() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = f"postgresql://posts:pw@127.0.0.1:{port}/social"

    async def main() -> None:
        pool = create_pool(unreachable, min_size=1, max_size=2, name="posts")
        assert pool.closed  # nothing is connected until the runner opens it
        await asyncio.wait_for(pool.open(wait=False), 1.0)  # returns at once
        try:
            assert not pool.closed
            # A readiness check says the database is not there (Readiness
            # bounds it with its own timeout).
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(check_database(pool), 0.3)
        finally:
            await pool.close()

    asyncio.run(main())


def test_connections_are_named_and_in_the_services_own_schema(stack: Endpoints) -> None:
    async def main() -> tuple[str, str, str, int | None]:
        pool = create_pool(stack.database_urls["posts"], min_size=1, max_size=2, name="posts-test")
        await pool.open(wait=True, timeout=10)
        try:
            await check_database(pool)
            async with pool.connection() as conn:
                cursor = await conn.execute(
                    "SELECT current_setting('application_name'), current_user, current_schema()"
                )
                row = await cursor.fetchone()
                assert row is not None
                return row[0], row[1], row[2], conn.prepare_threshold
        finally:
            await pool.close()

    assert asyncio.run(main()) == ("posts-test", "posts", "posts", PREPARE_THRESHOLD)


def test_connections_detect_a_server_that_vanished_without_a_reset(stack: Endpoints) -> None:
    async def main() -> dict[str, str]:
        pool = create_pool(stack.database_urls["posts"], min_size=1, max_size=1, name="posts-test")
        await pool.open(wait=True, timeout=10)
        try:
            async with pool.connection() as conn:
                return conn.info.get_parameters()
        finally:
            await pool.close()

    parameters = asyncio.run(main())
    # As libpq took them for the connection (it leaves out what it ignored).
    assert {name: parameters.get(name) for name in DEAD_PEER_DETECTION} == {
        name: str(value) for name, value in DEAD_PEER_DETECTION.items()
    }


def test_a_statement_run_repeatedly_on_a_connection_becomes_server_side_prepared(
    stack: Endpoints,
) -> None:
    marker = "/* prepare-me */"

    async def main() -> list[int]:
        pool = create_pool(stack.database_urls["posts"], min_size=1, max_size=1, name="posts-test")
        await pool.open(wait=True, timeout=10)
        prepared_after: list[int] = []
        try:
            async with pool.connection() as conn:
                for n in range(PREPARE_THRESHOLD + 1):
                    await conn.execute(f"SELECT %s::int + 1 {marker}", (n,))
                    cursor = await conn.execute(
                        "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                        (f"%{marker}%",),
                    )
                    row = await cursor.fetchone()
                    assert row is not None
                    prepared_after.append(row[0])
        finally:
            await pool.close()
        return prepared_after

    counts = asyncio.run(main())
    assert counts[0] == 0  # run once: sent as it is
    assert counts[-1] == 1  # run past the threshold: prepared, once


def test_a_statement_is_its_own_transaction_and_atomic_work_says_so(stack: Endpoints) -> None:
    async def main() -> tuple[TransactionStatus, list[tuple[int]]]:
        # As the administrator: a service's role may not make a temporary table.
        pool = create_pool(stack.database_admin_url, min_size=1, max_size=1, name="pool-test")
        await pool.open(wait=True, timeout=10)
        try:
            async with pool.connection() as conn:
                await conn.execute("CREATE TEMP TABLE kept (n int)")
                # One round trip, no BEGIN before it nor COMMIT after it.
                after_a_statement = conn.info.transaction_status
                with contextlib.suppress(ZeroDivisionError):
                    async with conn.transaction():
                        await conn.execute("INSERT INTO kept VALUES (1)")
                        raise ZeroDivisionError  # the work fails: none of it stays
                await conn.execute("INSERT INTO kept VALUES (2)")
                cursor = await conn.execute("SELECT n FROM kept")
                return after_a_statement, await cursor.fetchall()
        finally:
            await pool.close()

    status, kept = asyncio.run(main())
    assert status == TransactionStatus.IDLE
    assert kept == [(2,)]


@pytest.mark.parametrize("binary", [False, True])
def test_moments_come_back_in_utc_whatever_the_sessions_time_zone(
    stack: Endpoints, binary: bool
) -> None:
    async def main() -> datetime:
        pool = create_pool(stack.database_urls["posts"], min_size=1, max_size=1, name="posts-test")
        await pool.open(wait=True, timeout=10)
        try:
            async with pool.connection() as conn:
                await conn.execute("SET TIME ZONE 'Asia/Kolkata'")
                cursor = conn.cursor(binary=binary)
                await cursor.execute("SELECT '2026-12-04 20:16:01+00'::timestamptz")
                row = await cursor.fetchone()
                assert row is not None
                moment: datetime = row[0]
                return moment
        finally:
            await pool.close()

    moment = asyncio.run(main())
    assert moment == datetime(2026, 12, 4, 20, 16, 1, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)

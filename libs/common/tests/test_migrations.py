"""The migration runner and the per-service roles, against the stack's PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql
from social_common.fleet import roster
from social_common.migrations import (
    MigrationError,
    apply_migrations,
    ensure_service_schema,
    load_migrations,
)
from social_stack.local import Endpoints, with_credentials


def _new_service(stack: Endpoints) -> tuple[str, str]:
    """A throwaway role and schema, as the stack makes for each service."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    ensure_service_schema(stack.database_admin_url, name, "secret-pw")
    return name, with_credentials(stack.database_admin_url, name, "secret-pw")


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_migration_applied_twice_is_a_no_op(stack: Endpoints, tmp_path: Path) -> None:
    schema, url = _new_service(stack)
    migrations = load_migrations(
        _write(
            tmp_path / "m",
            {
                "0001_things.sql": "CREATE TABLE things (id int PRIMARY KEY);",
                "0002_seed.sql": "INSERT INTO things VALUES (1);",
            },
        )
    )
    first = apply_migrations(url, schema, migrations)
    second = apply_migrations(url, schema, migrations)
    assert [m.name for m in first] == ["things", "seed"]
    assert second == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM things").fetchone() == (1,)
        # unqualified names landed in the service's own schema
        rows = conn.execute("SELECT schemaname FROM pg_tables WHERE tablename = 'things'")
        assert rows.fetchall() == [(schema,)]


def test_concurrent_runners_apply_each_migration_once(stack: Endpoints, tmp_path: Path) -> None:
    schema, url = _new_service(stack)
    migrations = load_migrations(
        _write(
            tmp_path / "m",
            {
                "0001_counter.sql": "CREATE TABLE counter (n int); INSERT INTO counter VALUES (0);",
                "0002_bump.sql": "SELECT pg_sleep(0.2); UPDATE counter SET n = n + 1;",
            },
        )
    )
    results: list[int] = []

    def run() -> None:
        results.append(len(apply_migrations(url, schema, migrations)))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [0, 0, 2]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT n FROM counter").fetchone() == (1,)


def test_an_edited_migration_is_refused(stack: Endpoints, tmp_path: Path) -> None:
    schema, url = _new_service(stack)
    directory = _write(tmp_path / "m", {"0001_t.sql": "CREATE TABLE t (id int);"})
    apply_migrations(url, schema, load_migrations(directory))
    _write(directory, {"0001_t.sql": "CREATE TABLE t (id bigint);"})
    with pytest.raises(MigrationError, match="changed after it was applied"):
        apply_migrations(url, schema, load_migrations(directory))


def test_a_failed_migration_leaves_nothing_half_applied(stack: Endpoints, tmp_path: Path) -> None:
    schema, url = _new_service(stack)
    directory = _write(
        tmp_path / "m", {"0001_bad.sql": "CREATE TABLE half (id int); SELECT no_such_function();"}
    )
    with pytest.raises(psycopg.errors.UndefinedFunction):
        apply_migrations(url, schema, load_migrations(directory))
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


def test_badly_named_migration_files_are_refused(tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", {"1_init.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match=r"0001_name\.sql"):
        load_migrations(directory)


def test_a_service_role_cannot_read_another_services_schema(stack: Endpoints) -> None:
    with psycopg.connect(stack.database_urls["posts"], autocommit=True) as posts:
        posts.execute("CREATE TABLE IF NOT EXISTS isolation_probe (secret text)")
        posts.execute("INSERT INTO isolation_probe VALUES ('posts only')")
    with psycopg.connect(stack.database_urls["auth"], autocommit=True) as auth:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            auth.execute("SELECT * FROM posts.isolation_probe")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            auth.execute("CREATE TABLE public.sneaky (id int)")


def test_service_roles_own_only_their_schema(stack: Endpoints) -> None:
    services = sorted(roster().database_services)
    with psycopg.connect(stack.database_admin_url) as conn:
        rows = conn.execute(
            "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace"
            " WHERE nspname = ANY(%s) ORDER BY 1",
            (services,),
        ).fetchall()
    assert rows == [(name, name) for name in services]


def _run_migrate(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m <service> migrate`, as the chart's migration Job runs it."""
    return subprocess.run(
        [sys.executable, "-m", service, "migrate"],
        env={"PATH": os.environ["PATH"], "APP_ENV": "test", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_migrate_given_an_admin_url_makes_the_role_and_schema_of_a_fresh_database(
    stack: Endpoints,
) -> None:
    database = f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    admin = with_credentials(
        stack.database_admin_url,
        urlsplit(stack.database_admin_url).username or "",
        urlsplit(stack.database_admin_url).password or "",
        database,
    )
    # The role exists already (roles belong to the server): same name, same password.
    own = with_credentials(stack.database_urls["messages"], "messages", "dev-messages", database)
    env = {"DATABASE_URL": own, "DATABASE_ADMIN_URL": admin}

    result = _run_migrate("messages", env)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(own) as conn:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'messages'")
        assert {"messages", "outbox"} <= {row[0] for row in tables}

    wrong = {**env, "DATABASE_URL": own.replace("messages:", "posts:", 1)}
    refused = _run_migrate("messages", wrong)
    assert refused.returncode != 0
    assert "must name the role 'messages'" in refused.stderr


def test_an_administrator_that_is_no_superuser_makes_a_service_role_and_schema(
    stack: Endpoints,
) -> None:
    # As a managed database has it (Cloud SQL): CREATEROLE, owner of the database.
    admin, database, service = (f"{p}_{uuid.uuid4().hex[:8]}" for p in ("adm", "db", "svc"))
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE CREATEDB PASSWORD 'adm-pw'").format(
                sql.Identifier(admin)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(database), sql.Identifier(admin)
            )
        )
    admin_url = with_credentials(stack.database_admin_url, admin, "adm-pw", database)
    for password in ("first-pw", "second-pw"):  # made, then updated
        ensure_service_schema(admin_url, service, password)
    own = with_credentials(stack.database_admin_url, service, "second-pw", database)
    with psycopg.connect(own) as conn:
        conn.execute("CREATE TABLE things (id int)")
        rows = conn.execute("SELECT schemaname FROM pg_tables WHERE tablename = 'things'")
        assert rows.fetchall() == [(service,)]

"""SQL migrations: ordered files per service, applied once each under a lock.

A service's migrations are the ``NNNN_name.sql`` files of the ``migrations``
directory inside its package (so every wheel and image carries its own).
:func:`apply_migrations` runs the ones not yet recorded in
``<schema>.schema_migrations``, each in its own transaction, while holding a
PostgreSQL advisory lock, so two pods starting at once apply each file exactly
once. A recorded file whose text has changed is an error: a shipped migration
is never edited, a new one is added.

:func:`ensure_service_schema` is the administrator's part: one role and one
schema per service, the role owning its schema and nothing else.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable

import psycopg
from psycopg import sql

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def load_migrations(directory: Traversable) -> list[Migration]:
    """The migrations in ``directory``, ordered by version."""
    found: list[Migration] = []
    for entry in directory.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if not match:
            raise MigrationError(f"{entry.name}: a migration is named like 0001_name.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"{directory}: two migrations share a version number")
    return found


def apply_migrations(
    conninfo: str, schema: str, migrations: list[Migration], ledger: str = "schema_migrations"
) -> list[Migration]:
    """Applies what is missing; returns what it applied (empty when up to date).

    ``ledger`` is the table recording what was applied: a service's own
    migrations and the platform's (e.g. the outbox) each keep their own.
    """
    applied: list[Migration] = []
    table = sql.Identifier(schema, ledger)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        lock_key = f"migrations:{schema}"
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock_key,))
        try:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " version integer PRIMARY KEY, name text NOT NULL,"
                    " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(table)
            )
            rows = conn.execute(
                sql.SQL("SELECT version, checksum FROM {}").format(table)
            ).fetchall()
            done = {version: checksum for version, checksum in rows}
            for migration in migrations:
                recorded = done.get(migration.version)
                if recorded is not None:
                    if recorded != migration.checksum:
                        raise MigrationError(
                            f"{schema} migration {migration.version:04d}_{migration.name} "
                            "changed after it was applied; add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.text.encode())  # the service's own trusted file
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (version, name, checksum) VALUES (%s, %s, %s)"
                        ).format(table),
                        (migration.version, migration.name, migration.checksum),
                    )
                applied.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock_key,))
    return applied


def ensure_service_schema(admin_conninfo: str, service: str, password: str) -> None:
    """Creates (or updates) the service's role and schema. Idempotent.

    The role logs in with ``password``, may connect to this database, owns
    schema ``service`` (its search_path) and gets nothing in any other schema;
    the database and its ``public`` schema are closed to everyone else, so no
    role reaches what it was not given and no table lands in ``public`` by
    accident.

    The administrator need not be a superuser (managed databases such as Cloud
    SQL give none): a role with CREATEROLE that owns the database will do.
    """
    role = sql.Identifier(service)
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (service,)).fetchone()
        # Only a superuser may so much as name the SUPERUSER attribute in an
        # ALTER; a role made here never had it.
        statement = (
            "ALTER ROLE {} LOGIN NOCREATEDB NOCREATEROLE PASSWORD {}"
            if exists
            else "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}"
        )
        conn.execute(sql.SQL(statement).format(role, sql.Literal(password)))
        # Giving a schema to a role takes being able to SET ROLE to it
        # (PostgreSQL 16): a CREATEROLE creator has only the ADMIN option.
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {0} AUTHORIZATION {0}").format(role))
        conn.execute(sql.SQL("ALTER ROLE {0} SET search_path = {0}").format(role))
        database = sql.Identifier(conn.info.dbname)
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, role))
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")

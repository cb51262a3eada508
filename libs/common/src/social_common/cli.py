"""The command line every service shares: ``python -m <service> [serve|migrate]``."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

from social_common.logging import configure_logging, get_logger
from social_common.migrations import apply_migrations, ensure_service_schema, load_migrations
from social_common.runner import S, ServiceSpec, run_service
from social_common.settings import Settings, SettingsError


def migrate(spec: ServiceSpec[Any], settings: Settings) -> list[str]:
    """Applies the service's pending migrations as its own role; returns their names.
    Given an administrator's URL, first makes (or updates) that role, named after
    the service, and its schema: a fresh database needs nothing done by hand."""
    if settings.database_url is None:
        raise SettingsError(f"{spec.name} has no database to migrate")
    if settings.database_admin_url:
        own = urlsplit(settings.database_url)
        if own.username != spec.name or not own.password:
            raise SettingsError(
                f"DATABASE_URL must name the role {spec.name!r} with its password "
                "for DATABASE_ADMIN_URL to make it"
            )
        ensure_service_schema(settings.database_admin_url, spec.name, unquote(own.password))
    migrations = load_migrations(resources.files(spec.name) / "migrations")
    applied = apply_migrations(settings.database_url, spec.name, migrations)
    if spec.publishes_events:
        outbox = load_migrations(resources.files("social_common") / "outbox_migrations")
        applied += apply_migrations(settings.database_url, spec.name, outbox, "outbox_migrations")
    return [f"{m.version:04d}_{m.name}" for m in applied]


def service_main(spec: ServiceSpec[S], argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {spec.name}")
    parser.add_argument(
        "command",
        nargs="?",
        default="serve",
        choices=["serve", "migrate", *spec.commands],
        help="serve REST and gRPC (default), apply pending migrations and exit, or "
        + (", ".join(spec.commands) or "nothing else"),
    )
    args = parser.parse_args(argv)
    try:
        # Only serving uses Redis: a migration Job need not be given it.
        settings = spec.settings_class.from_env(spec.name, needs_redis=args.command == "serve")
    except SettingsError as exc:
        sys.exit(f"{spec.name}: {exc}")
    if args.command == "serve":
        run_service(spec, settings)
        return
    configure_logging(spec.name, settings.log_level)
    if args.command == "migrate":
        try:
            applied = migrate(spec, settings)
        except SettingsError as exc:
            sys.exit(f"{spec.name}: {exc}")
        get_logger(__name__).info("migrated", applied=applied)
    else:
        spec.commands[args.command](settings)

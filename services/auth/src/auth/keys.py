"""Signing keys: ES256 keys kept in the database, published as a JWKS.

A new key is published at once and signs only from ``activates_at``, once
every JWKS cache (Envoy's, the services') has had time to see it; the key it
replaces stays published until every token it signed has expired. The first
start creates a key that signs at once: no token exists yet for a cache to lack.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from joserfc import jwt
from joserfc.jwk import ECKey
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from social_common.logging import get_logger
from social_common.tokens import ACCESS_TOKEN_ALGORITHM

log = get_logger(__name__)

# Retirement waits this long past the longest token lifetime, for clock skew.
RETIRE_LEEWAY = timedelta(minutes=1)
_LOCK = "auth:signing_keys"


def new_key() -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A fresh key: its kid, private JWK and public JWK."""
    kid = secrets.token_urlsafe(12)
    key = ECKey.generate_key(
        "P-256", parameters={"kid": kid, "alg": ACCESS_TOKEN_ALGORITHM, "use": "sig"}
    )
    return kid, dict(key.as_dict(private=True)), dict(key.as_dict(private=False))


@dataclass(frozen=True)
class _Key:
    kid: str
    private: ECKey
    public_jwk: dict[str, Any]
    activates_at: datetime


class KeyRing:
    """The published keys of the database, reloaded every ``reload_seconds``."""

    def __init__(self, pool: AsyncConnectionPool, reload_seconds: float = 30.0) -> None:
        self._pool = pool
        self._reload_seconds = reload_seconds
        self._keys: list[_Key] = []
        self._loaded = asyncio.Event()

    async def load(self) -> None:
        async with self._pool.connection() as conn:
            rows = await self._published(conn)
            if not any(r[3] <= datetime.now(UTC) for r in rows):
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
                    rows = await self._published(conn)
                    if not any(r[3] <= datetime.now(UTC) for r in rows):
                        kid, private, public = new_key()
                        await conn.execute(
                            "INSERT INTO signing_keys (kid, private_jwk, public_jwk, activates_at)"
                            " VALUES (%s, %s, %s, now())",
                            (kid, Jsonb(private), Jsonb(public)),
                        )
                        log.info("signing_key_created", kid=kid)
                rows = await self._published(conn)
        self._keys = [
            _Key(kid, ECKey.import_key(private), public, activates_at)
            for kid, private, public, activates_at in rows
        ]
        self._loaded.set()

    @staticmethod
    async def _published(
        conn: psycopg.AsyncConnection[Any],
    ) -> list[tuple[str, dict[str, Any], dict[str, Any], datetime]]:
        cursor = await conn.execute(
            "SELECT kid, private_jwk, public_jwk, activates_at FROM signing_keys"
            " WHERE retires_at IS NULL OR retires_at > now() ORDER BY activates_at"
        )
        return await cursor.fetchall()

    async def keep_loaded(self) -> None:
        """Reloads forever (a background task), surviving database hiccups."""
        while True:
            try:
                await self.load()
            except (psycopg.Error, OSError) as exc:
                log.warning("signing_keys_reload_failed", error=str(exc))
            await asyncio.sleep(self._reload_seconds)

    async def jwks(self) -> dict[str, Any]:
        await self._loaded.wait()
        return {"keys": [key.public_jwk for key in self._keys]}

    async def sign(self, claims: dict[str, Any]) -> str:
        """Signs with the newest key that has been published long enough."""
        await self._loaded.wait()
        now = datetime.now(UTC)
        key = [k for k in self._keys if k.activates_at <= now][-1]
        header = {"alg": ACCESS_TOKEN_ALGORITHM, "kid": key.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, key.private, algorithms=[ACCESS_TOKEN_ALGORITHM])


def rotate_keys(
    database_url: str, publish_ahead: timedelta, longest_token_life: timedelta
) -> tuple[str, datetime]:
    """Publishes a new key that signs from ``now + publish_ahead``; schedules
    the retirement of the keys before it and deletes the retired ones.
    Returns the new kid and when it starts signing."""
    kid, private, public = new_key()
    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
        row = conn.execute(
            "INSERT INTO signing_keys (kid, private_jwk, public_jwk, activates_at)"
            " VALUES (%s, %s, %s, now() + %s) RETURNING activates_at",
            (kid, Jsonb(private), Jsonb(public), publish_ahead),
        ).fetchone()
        assert row is not None
        activates_at: datetime = row[0]
        # Tokens signed by an older key until the new one takes over live at
        # most longest_token_life more.
        conn.execute(
            "UPDATE signing_keys SET retires_at = %s WHERE retires_at IS NULL AND kid <> %s",
            (activates_at + longest_token_life + RETIRE_LEEWAY, kid),
        )
        conn.execute("DELETE FROM signing_keys WHERE retires_at < now()")
    return kid, activates_at

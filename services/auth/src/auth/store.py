"""SQL of the auth service: plain statements, parameters always bound."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

Conn = AsyncConnection[Any]

_USER_COLUMNS = (
    "id, username, email, display_name, bio, follower_count, following_count, created_at"
)


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    username: str
    email: str
    display_name: str
    bio: str
    follower_count: int
    following_count: int
    created_at: datetime


@dataclass(frozen=True)
class Credentials:
    id: uuid.UUID
    password_hash: str


@dataclass(frozen=True)
class RefreshState:
    family_id: uuid.UUID
    user_id: uuid.UUID
    expired: bool
    spent: bool
    revoked: bool


@dataclass(frozen=True)
class FollowEntry:
    id: uuid.UUID
    username: str
    display_name: str
    followed_at: datetime


async def insert_user(
    conn: Conn, user_id: uuid.UUID, username: str, email: str, password_hash: str
) -> User:
    cursor = conn.cursor(row_factory=class_row(User))
    await cursor.execute(
        f"INSERT INTO users (id, username, email, password_hash) VALUES (%s, %s, %s, %s)"
        f" RETURNING {_USER_COLUMNS}",
        (user_id, username, email, password_hash),
    )
    user = await cursor.fetchone()
    assert user is not None
    return user


async def taken(conn: Conn, username: str, email: str) -> str | None:
    """Which of ``username`` and ``email`` an account already has, or a
    deleted one retired ("username" first), or None."""
    cursor = await conn.execute(
        "SELECT lower(username) = lower(%s) FROM users"
        " WHERE lower(username) = lower(%s) OR lower(email) = lower(%s)"
        " UNION ALL SELECT true FROM retired_usernames"
        " WHERE username = lower(%s) AND retired_until > now()"
        " ORDER BY 1 DESC LIMIT 1",
        (username, username, email, username),
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    return "username" if row[0] else "email"


async def delete_user(conn: Conn, user_id: uuid.UUID, retire_for: timedelta) -> bool:
    """Deletes the account (its sessions and follows go with it, the counts
    of whom it followed and who followed it are corrected) and retires its
    username for ``retire_for``; whether there was one."""
    cursor = await conn.execute("SELECT username FROM users WHERE id = %s FOR UPDATE", (user_id,))
    row = await cursor.fetchone()
    if row is None:
        return False
    await conn.execute(
        "UPDATE users SET follower_count = follower_count - 1, updated_at = now()"
        " WHERE id IN (SELECT followee_id FROM follows WHERE follower_id = %s)",
        (user_id,),
    )
    await conn.execute(
        "UPDATE users SET following_count = following_count - 1, updated_at = now()"
        " WHERE id IN (SELECT follower_id FROM follows WHERE followee_id = %s)",
        (user_id,),
    )
    await conn.execute(
        "INSERT INTO retired_usernames (username, retired_until) VALUES (lower(%s), now() + %s)"
        " ON CONFLICT (username) DO UPDATE SET retired_until = excluded.retired_until",
        (row[0], retire_for),
    )
    await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
    return True


async def purge_retired_usernames(conn: Conn) -> int:
    cursor = await conn.execute("DELETE FROM retired_usernames WHERE retired_until <= now()")
    return cursor.rowcount


async def credentials(conn: Conn, *, username: str | None, email: str | None) -> Credentials | None:
    cursor = conn.cursor(row_factory=class_row(Credentials))
    if email is not None:
        await cursor.execute(
            "SELECT id, password_hash FROM users WHERE lower(email) = lower(%s)", (email,)
        )
    else:
        await cursor.execute(
            "SELECT id, password_hash FROM users WHERE lower(username) = lower(%s)", (username,)
        )
    return await cursor.fetchone()


async def password_hash(conn: Conn, user_id: uuid.UUID) -> str | None:
    row = await (
        await conn.execute("SELECT password_hash FROM users WHERE id = %s", (user_id,))
    ).fetchone()
    return None if row is None else str(row[0])


async def lock_password_hash(conn: Conn, user_id: uuid.UUID) -> str | None:
    """The current hash, its row locked until the transaction ends."""
    cursor = await conn.execute(
        "SELECT password_hash FROM users WHERE id = %s FOR UPDATE", (user_id,)
    )
    row = await cursor.fetchone()
    return None if row is None else str(row[0])


async def set_password_hash(conn: Conn, user_id: uuid.UUID, new_hash: str) -> None:
    await conn.execute(
        "UPDATE users SET password_hash = %s, updated_at = now() WHERE id = %s",
        (new_hash, user_id),
    )


async def user_by_id(conn: Conn, user_id: uuid.UUID) -> User | None:
    cursor = conn.cursor(row_factory=class_row(User))
    await cursor.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s", (user_id,))
    return await cursor.fetchone()


async def user_by_username(conn: Conn, username: str) -> User | None:
    cursor = conn.cursor(row_factory=class_row(User))
    await cursor.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE lower(username) = lower(%s)", (username,)
    )
    return await cursor.fetchone()


async def users_by_ids_or_usernames(
    conn: Conn, ids: Sequence[uuid.UUID], usernames: Sequence[str]
) -> list[User]:
    """The users whose id is among ``ids`` or whose lowercase name is among
    ``usernames``, each once (both indexes serve the query)."""
    cursor = conn.cursor(row_factory=class_row(User))
    await cursor.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = ANY(%s) OR lower(username) = ANY(%s)",
        (list(ids), list(usernames)),
    )
    return await cursor.fetchall()


async def update_profile(conn: Conn, user_id: uuid.UUID, changes: dict[str, str]) -> User | None:
    # Only these columns can ever be set from a request; names never come from input.
    assignments = {"display_name": "display_name = %s", "bio": "bio = %s"}
    sets = [assignments[name] for name in changes]
    cursor = conn.cursor(row_factory=class_row(User))
    await cursor.execute(
        f"UPDATE users SET {', '.join(sets)}, updated_at = now() WHERE id = %s"
        f" RETURNING {_USER_COLUMNS}",
        (*changes.values(), user_id),
    )
    return await cursor.fetchone()


async def is_following(conn: Conn, follower: uuid.UUID, followee: uuid.UUID) -> bool:
    cursor = await conn.execute(
        "SELECT 1 FROM follows WHERE follower_id = %s AND followee_id = %s", (follower, followee)
    )
    return await cursor.fetchone() is not None


# -- refresh tokens ---------------------------------------------------------


async def new_family(conn: Conn, family_id: uuid.UUID, user_id: uuid.UUID) -> None:
    await conn.execute(
        "INSERT INTO token_families (id, user_id) VALUES (%s, %s)", (family_id, user_id)
    )


async def insert_refresh_token(
    conn: Conn, token_hash: bytes, family_id: uuid.UUID, ttl_seconds: int
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, expires_at)"
        " VALUES (%s, %s, now() + make_interval(secs => %s))",
        (token_hash, family_id, ttl_seconds),
    )


async def lock_refresh_token(conn: Conn, token_hash: bytes) -> RefreshState | None:
    """The token's state, its row locked until the transaction ends: of two
    concurrent refreshes with one token, the second sees the first's outcome."""
    cursor = conn.cursor(row_factory=class_row(RefreshState))
    await cursor.execute(
        "SELECT t.family_id, f.user_id, t.expires_at <= now() AS expired,"
        " t.spent_at IS NOT NULL AS spent, f.revoked_at IS NOT NULL AS revoked"
        " FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id"
        " WHERE t.token_hash = %s FOR UPDATE OF t",
        (token_hash,),
    )
    return await cursor.fetchone()


async def spend_refresh_token(conn: Conn, token_hash: bytes) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET spent_at = now() WHERE token_hash = %s", (token_hash,)
    )


async def revoke_families(
    conn: Conn, user_id: uuid.UUID, reason: str, family_id: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """Ends the user's session ``family_id``, or every one of them; the ids
    of those that were still open."""
    cursor = await conn.execute(
        "UPDATE token_families SET revoked_at = now(), revoked_reason = %s"
        " WHERE user_id = %s AND id = coalesce(%s::uuid, id) AND revoked_at IS NULL RETURNING id",
        (reason, user_id, family_id),
    )
    return [row[0] for row in await cursor.fetchall()]


async def purge_expired_refresh_tokens(conn: Conn) -> int:
    cursor = await conn.execute(
        "DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'"
    )
    purged = cursor.rowcount
    await conn.execute(
        "DELETE FROM token_families f WHERE created_at < now() - interval '1 day'"
        " AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id)"
    )
    return purged


# -- follows -----------------------------------------------------------------


async def follow(conn: Conn, follower: uuid.UUID, followee: uuid.UUID) -> bool:
    """True when this call created the follow (counters move only then)."""
    cursor = await conn.execute(
        "INSERT INTO follows (follower_id, followee_id) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        (follower, followee),
    )
    if await cursor.fetchone() is None:
        return False
    await _move_counters(conn, follower, followee, +1)
    return True


async def unfollow(conn: Conn, follower: uuid.UUID, followee: uuid.UUID) -> bool:
    cursor = await conn.execute(
        "DELETE FROM follows WHERE follower_id = %s AND followee_id = %s RETURNING 1",
        (follower, followee),
    )
    if await cursor.fetchone() is None:
        return False
    await _move_counters(conn, follower, followee, -1)
    return True


async def _move_counters(conn: Conn, follower: uuid.UUID, followee: uuid.UUID, by: int) -> None:
    # Updated in id order so two opposite follows cannot deadlock.
    for user_id in sorted((follower, followee)):
        column = "following_count" if user_id == follower else "follower_count"
        await conn.execute(
            f"UPDATE users SET {column} = {column} + %s WHERE id = %s", (by, user_id)
        )


_PAGE_QUERIES = {
    # (the listed user's column, the other side's column)
    "followers": ("followee_id", "follower_id"),
    "following": ("follower_id", "followee_id"),
}


def _follow_entries(other: str) -> str:
    """The FollowEntry of each follow, the other side's account (``other``)."""
    return (
        "SELECT u.id, u.username, u.display_name, f.created_at AS followed_at"
        f" FROM follows f JOIN users u ON u.id = f.{other}"
    )


async def follows_after(
    conn: Conn, direction: str, user_id: uuid.UUID, after: uuid.UUID, limit: int
) -> list[FollowEntry]:
    """A user's followers or followings with ids past ``after``, in id order
    (an export's pages: stable, unlike the newest-first listing)."""
    own, other = _PAGE_QUERIES[direction]
    cursor = conn.cursor(row_factory=class_row(FollowEntry))
    await cursor.execute(
        f"{_follow_entries(other)} WHERE f.{own} = %s AND f.{other} > %s"
        f" ORDER BY f.{other} LIMIT %s",
        (user_id, after, limit),
    )
    return await cursor.fetchall()


async def follow_page(
    conn: Conn,
    direction: str,
    user_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[FollowEntry]:
    """One page of a user's followers or followings, newest first."""
    own, other = _PAGE_QUERIES[direction]
    cursor = conn.cursor(row_factory=class_row(FollowEntry))
    condition = f"(f.created_at, f.{other}) < (%s, %s)" if after else "true"
    await cursor.execute(
        f"{_follow_entries(other)} WHERE f.{own} = %s AND {condition}"
        f" ORDER BY f.created_at DESC, f.{other} DESC LIMIT %s",
        (user_id, *(after or ()), limit),
    )
    return await cursor.fetchall()

"""SQL of the posts service: plain statements, parameters always bound."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

Conn = AsyncConnection[Any]

_COLUMNS = "id, author_id, caption, media, like_count, message_count, version, created_at"


@dataclass(frozen=True)
class PostRow:
    id: uuid.UUID
    author_id: uuid.UUID
    caption: str
    media: list[dict[str, Any]]
    like_count: int
    message_count: int
    version: int
    created_at: datetime


async def insert_post(
    conn: Conn, post_id: uuid.UUID, author_id: uuid.UUID, caption: str, media: list[Any]
) -> PostRow:
    cursor = conn.cursor(row_factory=class_row(PostRow))
    await cursor.execute(
        f"INSERT INTO posts (id, author_id, caption, media) VALUES (%s, %s, %s, %s)"
        f" RETURNING {_COLUMNS}",
        (post_id, author_id, caption, Jsonb(media)),
    )
    row = await cursor.fetchone()
    assert row is not None
    return row


async def posts_by_ids(conn: Conn, ids: Sequence[uuid.UUID]) -> list[PostRow]:
    cursor = conn.cursor(row_factory=class_row(PostRow))
    await cursor.execute(f"SELECT {_COLUMNS} FROM posts WHERE id = ANY(%s)", (list(ids),))
    return await cursor.fetchall()


async def page_ids(
    conn: Conn,
    *,
    authors: Sequence[uuid.UUID] | None,
    before: uuid.UUID | None,
    limit: int,
) -> list[uuid.UUID]:
    """Ids of the newest posts (of ``authors``, or everyone's) older than ``before``.

    Each author's posts are read through posts_by_author (author_id, id DESC),
    at most ``limit`` of them, and merged: ``author_id = ANY(...) ORDER BY id``
    is planned, once the statement is prepared, as a walk down the primary key
    that skips everyone else's posts (a whole table's worth for a quiet author).
    """
    newer = "" if before is None else "AND id < %(before)s"
    if authors is None:
        query = f"SELECT id FROM posts WHERE true {newer} ORDER BY id DESC LIMIT %(limit)s"
    elif len(authors) == 1:
        query = (
            f"SELECT id FROM posts WHERE author_id = %(author)s {newer}"
            " ORDER BY id DESC LIMIT %(limit)s"
        )
    else:
        query = (
            "SELECT p.id FROM unnest(%(authors)s::uuid[]) AS a (author_id) CROSS JOIN LATERAL"
            f" (SELECT id FROM posts WHERE author_id = a.author_id {newer}"
            "  ORDER BY id DESC LIMIT %(limit)s) AS p"
            " ORDER BY p.id DESC LIMIT %(limit)s"
        )
    params = {
        "authors": authors,
        "author": authors[0] if authors else None,
        "before": before,
        "limit": limit,
    }
    cursor = await conn.execute(query, params)
    return [row[0] for row in await cursor.fetchall()]


async def delete_post(conn: Conn, post_id: uuid.UUID, author_id: uuid.UUID) -> PostRow | None:
    """Deletes the post if ``author_id`` wrote it (its likes go with it)."""
    cursor = conn.cursor(row_factory=class_row(PostRow))
    await cursor.execute(
        f"DELETE FROM posts WHERE id = %s AND author_id = %s RETURNING {_COLUMNS}",
        (post_id, author_id),
    )
    return await cursor.fetchone()


async def set_like(
    conn: Conn, post_id: uuid.UUID, user_id: uuid.UUID, *, on: bool
) -> tuple[PostRow | None, bool]:
    """Likes (or unlikes) a post; returns the post (None if there is none)
    and whether anything changed. The post's row is locked first, so the
    like and the counter move together and a concurrent delete waits."""
    cursor = conn.cursor(row_factory=class_row(PostRow))
    await cursor.execute(f"SELECT {_COLUMNS} FROM posts WHERE id = %s FOR UPDATE", (post_id,))
    post = await cursor.fetchone()
    if post is None:
        return None, False
    if on:
        changed = await conn.execute(
            "INSERT INTO likes (post_id, user_id) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (post_id, user_id),
        )
    else:
        changed = await conn.execute(
            "DELETE FROM likes WHERE post_id = %s AND user_id = %s", (post_id, user_id)
        )
    if changed.rowcount == 0:
        return post, False
    await cursor.execute(
        "UPDATE posts SET like_count = GREATEST(like_count + %s, 0), version = version + 1"
        f" WHERE id = %s RETURNING {_COLUMNS}",
        (1 if on else -1, post_id),
    )
    return await cursor.fetchone(), True


async def recent_likes(conn: Conn, user_id: uuid.UUID, limit: int) -> tuple[list[uuid.UUID], bool]:
    """The ids of the posts the user liked last (at most ``limit``), and
    whether there are more."""
    cursor = await conn.execute(
        "SELECT post_id FROM likes WHERE user_id = %s ORDER BY created_at DESC LIMIT %s",
        (user_id, limit + 1),
    )
    rows = await cursor.fetchall()
    return [row[0] for row in rows[:limit]], len(rows) > limit


async def liked(conn: Conn, user_id: uuid.UUID, post_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``post_ids`` the user likes."""
    cursor = await conn.execute(
        "SELECT post_id FROM likes WHERE user_id = %s AND post_id = ANY(%s)",
        (user_id, list(post_ids)),
    )
    return {row[0] for row in await cursor.fetchall()}


async def count_message(
    conn: Conn, message_id: uuid.UUID, post_id: uuid.UUID, *, deleted: bool
) -> PostRow | None:
    """Counts a message created (or deleted) on a post, once, in whichever
    order the two are heard; the post after a change, or None when nothing
    changed (a redelivery, a deletion of a message never counted, a post
    deleted since). One statement: the ledger's verdict moves the counter."""
    if not deleted:
        ledger = (
            "INSERT INTO counted_messages (message_id, post_id, deleted)"
            " SELECT %s, id, false FROM posts WHERE id = %s ON CONFLICT DO NOTHING"
            " RETURNING post_id, 1 AS delta"
        )
    else:
        # Inserted: never counted (its creation may still come, and is then
        # ignored). Updated from not deleted: counted, so uncounted now.
        ledger = (
            "INSERT INTO counted_messages (message_id, post_id, deleted)"
            " SELECT %s, id, true FROM posts WHERE id = %s"
            " ON CONFLICT (message_id) DO UPDATE SET deleted = true, heard_at = now()"
            " WHERE NOT counted_messages.deleted"
            " RETURNING post_id, CASE WHEN xmax <> 0 THEN -1 ELSE 0 END AS delta"
        )
    cursor = conn.cursor(row_factory=class_row(PostRow))
    await cursor.execute(
        f"WITH counted AS ({ledger})"
        " UPDATE posts SET message_count = GREATEST(message_count + counted.delta, 0),"
        " version = version + 1"
        " FROM counted WHERE posts.id = counted.post_id AND counted.delta <> 0"
        f" RETURNING {_COLUMNS}",
        (message_id, post_id),
    )
    return await cursor.fetchone()


async def purge_counted_messages(conn: Conn, older_than_seconds: int) -> int:
    """Forgets deleted messages heard of long enough ago that no redelivery of
    their creation can still come."""
    cursor = await conn.execute(
        "DELETE FROM counted_messages"
        " WHERE deleted AND heard_at < now() - make_interval(secs => %s)",
        (older_than_seconds,),
    )
    return cursor.rowcount


async def post_ids_by_author(conn: Conn, author_id: uuid.UUID) -> list[uuid.UUID]:
    cursor = await conn.execute("SELECT id FROM posts WHERE author_id = %s", (author_id,))
    return [row[0] for row in await cursor.fetchall()]


async def liked_post_ids(conn: Conn, user_id: uuid.UUID) -> list[uuid.UUID]:
    cursor = await conn.execute("SELECT post_id FROM likes WHERE user_id = %s", (user_id,))
    return [row[0] for row in await cursor.fetchall()]


async def author_posts_after(
    conn: Conn, author_id: uuid.UUID, after: uuid.UUID, limit: int
) -> list[PostRow]:
    """The author's posts with ids past ``after``, oldest first."""
    cursor = conn.cursor(row_factory=class_row(PostRow))
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM posts WHERE author_id = %s AND id > %s ORDER BY id LIMIT %s",
        (author_id, after, limit),
    )
    return await cursor.fetchall()


@dataclass(frozen=True)
class LikeRow:
    post_id: uuid.UUID
    created_at: datetime


async def likes_after(
    conn: Conn, user_id: uuid.UUID, after: uuid.UUID, limit: int
) -> list[LikeRow]:
    """The user's likes of posts with ids past ``after``, in post id order."""
    cursor = conn.cursor(row_factory=class_row(LikeRow))
    await cursor.execute(
        "SELECT post_id, created_at FROM likes WHERE user_id = %s"
        " AND post_id > %s ORDER BY post_id LIMIT %s",
        (user_id, after, limit),
    )
    return await cursor.fetchall()

"""SQL of the messages service: plain statements, parameters always bound."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import class_row

Conn = AsyncConnection[Any]

_COLUMNS = "id, post_id, sender_id, body, created_at"


@dataclass(frozen=True)
class Message:
    id: uuid.UUID
    post_id: uuid.UUID
    sender_id: uuid.UUID
    body: str
    created_at: datetime


async def insert_message(conn: Conn, message: Message) -> None:
    """Queues the insert (nothing is read back, so that a pipeline sends
    the whole transaction at once)."""
    await conn.execute(
        "INSERT INTO messages (id, post_id, sender_id, body, created_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (message.id, message.post_id, message.sender_id, message.body, message.created_at),
    )


async def page(
    conn: Conn, post_id: uuid.UUID, after: uuid.UUID | None, limit: int, *, newest_first: bool
) -> list[Message]:
    """A post's messages past ``after`` (by id) in the order asked."""
    comparison, order = ("<", "DESC") if newest_first else (">", "ASC")
    cursor = conn.cursor(row_factory=class_row(Message))
    if after is None:
        await cursor.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE post_id = %s ORDER BY id {order} LIMIT %s",
            (post_id, limit),
        )
    else:
        await cursor.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE post_id = %s AND id {comparison} %s"
            f" ORDER BY id {order} LIMIT %s",
            (post_id, after, limit),
        )
    return await cursor.fetchall()


async def delete_message(
    conn: Conn, message_id: uuid.UUID, post_id: uuid.UUID, sender_id: uuid.UUID | None
) -> Message | None:
    """Deletes the message if it is on ``post_id`` and, unless ``sender_id``
    is None (the post's author moderating), sent by ``sender_id``."""
    cursor = conn.cursor(row_factory=class_row(Message))
    await cursor.execute(
        f"DELETE FROM messages WHERE id = %s AND post_id = %s"
        f" AND (%s::uuid IS NULL OR sender_id = %s) RETURNING {_COLUMNS}",
        (message_id, post_id, sender_id, sender_id),
    )
    return await cursor.fetchone()


async def delete_post_messages(conn: Conn, post_id: uuid.UUID) -> int:
    cursor = await conn.execute("DELETE FROM messages WHERE post_id = %s", (post_id,))
    return cursor.rowcount


async def sender_post_ids(conn: Conn, sender_id: uuid.UUID) -> list[uuid.UUID]:
    cursor = await conn.execute(
        "SELECT DISTINCT post_id FROM messages WHERE sender_id = %s", (sender_id,)
    )
    return [row[0] for row in await cursor.fetchall()]


async def delete_sender_messages(conn: Conn, sender_id: uuid.UUID) -> list[Message]:
    cursor = conn.cursor(row_factory=class_row(Message))
    await cursor.execute(
        f"DELETE FROM messages WHERE sender_id = %s RETURNING {_COLUMNS}", (sender_id,)
    )
    return await cursor.fetchall()


async def counts(conn: Conn, post_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    cursor = await conn.execute(
        "SELECT post_id, count(*) FROM messages WHERE post_id = ANY(%s) GROUP BY post_id",
        (list(post_ids),),
    )
    return {row[0]: row[1] for row in await cursor.fetchall()}


async def sent_after(
    conn: Conn, sender_id: uuid.UUID, after: uuid.UUID, limit: int
) -> list[Message]:
    """The messages the sender sent with ids past ``after``, oldest first."""
    cursor = conn.cursor(row_factory=class_row(Message))
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM messages WHERE sender_id = %s AND id > %s ORDER BY id LIMIT %s",
        (sender_id, after, limit),
    )
    return await cursor.fetchall()

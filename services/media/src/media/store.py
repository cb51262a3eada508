"""SQL of the media service: plain statements, parameters always bound."""

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

_COLUMNS = (
    "id, owner_id, state, post_id, source_type, width, height, blurhash, description,"
    " renditions, created_at"
)


@dataclass(frozen=True)
class Media:
    id: uuid.UUID
    owner_id: uuid.UUID
    state: str
    post_id: uuid.UUID | None
    source_type: str
    width: int
    height: int
    blurhash: str
    description: str
    renditions: list[dict[str, Any]]
    created_at: datetime

    @property
    def keys(self) -> list[str]:
        return [str(r["key"]) for r in self.renditions]


@dataclass(frozen=True)
class DirectUpload:
    id: uuid.UUID
    owner_id: uuid.UUID
    object_key: str
    content_type: str
    description: str
    expires_at: datetime


async def insert_processing(conn: Conn, media: Media) -> None:
    await conn.execute(
        "INSERT INTO media (id, owner_id, state, source_type, width, height, blurhash,"
        " description, renditions) VALUES (%s, %s, 'processing', %s, %s, %s, %s, %s, %s)",
        (
            media.id,
            media.owner_id,
            media.source_type,
            media.width,
            media.height,
            media.blurhash,
            media.description,
            Jsonb(media.renditions),
        ),
    )


async def mark_stored(conn: Conn, media_id: uuid.UUID) -> Media | None:
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        f"UPDATE media SET state = 'pending', updated_at = now()"
        f" WHERE id = %s AND state = 'processing' RETURNING {_COLUMNS}",
        (media_id,),
    )
    return await cursor.fetchone()


async def delete(conn: Conn, media_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM media WHERE id = %s", (media_id,))


async def delete_unattached(conn: Conn, media_id: uuid.UUID, owner_id: uuid.UUID) -> Media | None:
    """Deletes the owner's media only if still unattached, in one statement, so
    an AttachMedia committing meanwhile either wins or loses, never half."""
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        f"DELETE FROM media WHERE id = %s AND owner_id = %s AND state = 'pending'"
        f" RETURNING {_COLUMNS}",
        (media_id, owner_id),
    )
    return await cursor.fetchone()


async def delete_attached(conn: Conn, post_id: uuid.UUID, owner_id: uuid.UUID) -> list[Media]:
    """Deletes the owner's media attached to ``post_id`` (none on a second call)."""
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        f"DELETE FROM media WHERE post_id = %s AND owner_id = %s RETURNING {_COLUMNS}",
        (post_id, owner_id),
    )
    return await cursor.fetchall()


async def delete_owned(conn: Conn, owner_id: uuid.UUID) -> tuple[list[Media], list[str]]:
    """Deletes all of an owner's media and direct uploads: the media, and the
    object keys of the uploads."""
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(f"DELETE FROM media WHERE owner_id = %s RETURNING {_COLUMNS}", (owner_id,))
    media = await cursor.fetchall()
    uploads = await conn.execute(
        "DELETE FROM direct_uploads WHERE owner_id = %s RETURNING object_key", (owner_id,)
    )
    return media, [row[0] for row in await uploads.fetchall()]


async def owned(conn: Conn, media_id: uuid.UUID, owner_id: uuid.UUID) -> Media | None:
    """The owner's stored media (never another user's, never half-stored)."""
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM media WHERE id = %s AND owner_id = %s AND state <> 'processing'",
        (media_id, owner_id),
    )
    return await cursor.fetchone()


async def many_owned(conn: Conn, ids: Sequence[uuid.UUID], owner_id: uuid.UUID) -> list[Media]:
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM media"
        " WHERE id = ANY(%s) AND owner_id = %s AND state <> 'processing'",
        (list(ids), owner_id),
    )
    return await cursor.fetchall()


async def set_description(
    conn: Conn, media_id: uuid.UUID, owner_id: uuid.UUID, description: str
) -> Media | None:
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        f"UPDATE media SET description = %s, updated_at = now()"
        f" WHERE id = %s AND owner_id = %s AND state <> 'processing' RETURNING {_COLUMNS}",
        (description, media_id, owner_id),
    )
    return await cursor.fetchone()


async def attach(
    conn: Conn, ids: Sequence[uuid.UUID], owner_id: uuid.UUID, post_id: uuid.UUID
) -> list[Media]:
    """Attaches the owner's pending media (or media already attached to this
    very post, so a retried call succeeds); returns those of ``ids`` that
    are attached to it."""
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        "UPDATE media SET state = 'attached', post_id = %s, updated_at = now()"
        " WHERE id = ANY(%s) AND owner_id = %s AND (state = 'pending' OR post_id = %s)"
        f" RETURNING {_COLUMNS}",
        (post_id, list(ids), owner_id, post_id),
    )
    return await cursor.fetchall()


async def lock_expired(
    conn: Conn, processing_age: int, pending_age: int, limit: int
) -> list[Media]:
    """Media to sweep: unattached past its time, or stuck half-stored."""
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM media WHERE state <> 'attached' AND ("
        " (state = 'processing' AND created_at < now() - make_interval(secs => %s))"
        " OR (state = 'pending' AND created_at < now() - make_interval(secs => %s)))"
        " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
        (processing_age, pending_age, limit),
    )
    return await cursor.fetchall()


async def delete_many(conn: Conn, ids: Sequence[uuid.UUID]) -> None:
    await conn.execute("DELETE FROM media WHERE id = ANY(%s)", (list(ids),))


async def insert_direct_upload(conn: Conn, upload: DirectUpload) -> None:
    await conn.execute(
        "INSERT INTO direct_uploads (id, owner_id, object_key, content_type, description,"
        " expires_at) VALUES (%s, %s, %s, %s, %s, %s)",
        (
            upload.id,
            upload.owner_id,
            upload.object_key,
            upload.content_type,
            upload.description,
            upload.expires_at,
        ),
    )


async def claim_direct_upload(
    conn: Conn, upload_id: uuid.UUID, owner_id: uuid.UUID
) -> DirectUpload | None:
    """Claims the owner's open upload for one completion attempt; a claim older
    than a minute belongs to a request that died and may be taken over."""
    cursor = conn.cursor(row_factory=class_row(DirectUpload))
    await cursor.execute(
        "UPDATE direct_uploads SET claimed_at = now()"
        " WHERE id = %s AND owner_id = %s AND expires_at > now() AND completed_at IS NULL"
        " AND (claimed_at IS NULL OR claimed_at < now() - interval '1 minute')"
        " RETURNING id, owner_id, object_key, content_type, description, expires_at",
        (upload_id, owner_id),
    )
    return await cursor.fetchone()


async def finish_direct_upload(conn: Conn, upload_id: uuid.UUID, *, completed: bool) -> None:
    """Completed for good, or released for a retry."""
    await conn.execute(
        "UPDATE direct_uploads SET claimed_at = NULL,"
        " completed_at = CASE WHEN %s THEN now() END WHERE id = %s",
        (completed, upload_id),
    )


async def take_expired_direct_uploads(conn: Conn, limit: int) -> list[str]:
    cursor = await conn.execute(
        "DELETE FROM direct_uploads WHERE id IN (SELECT id FROM direct_uploads"
        " WHERE expires_at < now() ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)"
        " RETURNING object_key",
        (limit,),
    )
    return [row[0] for row in await cursor.fetchall()]


async def remember_orphans(conn: Conn, keys: Sequence[str]) -> None:
    await conn.execute(
        "INSERT INTO orphan_objects (object_key) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
        (list(keys),),
    )


async def take_orphans(conn: Conn, limit: int) -> list[str]:
    """Removes and returns orphaned keys; the caller's transaction puts them
    back (by rolling back) if deleting the objects fails."""
    cursor = await conn.execute(
        "DELETE FROM orphan_objects WHERE object_key IN (SELECT object_key FROM orphan_objects"
        " ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING object_key",
        (limit,),
    )
    return [row[0] for row in await cursor.fetchall()]


async def owned_after(conn: Conn, owner_id: uuid.UUID, after: uuid.UUID, limit: int) -> list[Media]:
    """The owner's stored media (not those still processing) with ids past
    ``after``, in id order."""
    cursor = conn.cursor(row_factory=class_row(Media))
    await cursor.execute(
        f"SELECT {_COLUMNS} FROM media WHERE owner_id = %s AND state <> 'processing'"
        " AND id > %s ORDER BY id LIMIT %s",
        (owner_id, after, limit),
    )
    return await cursor.fetchall()

"""What posts keeps of an account, for its export: its posts and its likes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool
from social_common.models import encode
from social_common.userdata import Section, UserData

from posts import store, views


def user_data(db: AsyncConnectionPool) -> UserData:
    async def posts(
        user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> Sequence[tuple[uuid.UUID, bytes]]:
        async with db.connection() as conn:
            rows = await store.author_posts_after(conn, user_id, after, limit)
        return [(row.id, encode(views.exported_post(row))) for row in rows]

    async def likes(
        user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> Sequence[tuple[uuid.UUID, bytes]]:
        async with db.connection() as conn:
            rows = await store.likes_after(conn, user_id, after, limit)
        return [
            (
                row.post_id,
                encode(views.ExportedLike(post_id=str(row.post_id), created_at=row.created_at)),
            )
            for row in rows
        ]

    return UserData([Section("posts", posts), Section("likes", likes)])

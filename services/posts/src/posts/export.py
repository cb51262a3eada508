"""What posts keeps of an account, for its export: its posts and its likes."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from social_common.userdata import UserData, query_section

from posts import store, views


def user_data(db: AsyncConnectionPool) -> UserData:
    return UserData(
        [
            query_section(
                "posts",
                db,
                store.author_posts_after,
                lambda row: (row.id, views.exported_post(row)),
            ),
            query_section(
                "likes", db, store.likes_after, lambda row: (row.post_id, views.exported_like(row))
            ),
        ]
    )

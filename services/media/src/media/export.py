"""What media keeps of an account, for its export: its uploads, with their URLs."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from social_common.userdata import UserData, query_section

from media import store, views


def user_data(db: AsyncConnectionPool, public_base_url: str) -> UserData:
    return UserData(
        [
            query_section(
                "media",
                db,
                store.owned_after,
                lambda media: (media.id, views.exported_media(media, public_base_url)),
            )
        ]
    )

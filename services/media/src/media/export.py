"""What media keeps of an account, for its export: its uploads, with their URLs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool
from social_common.models import encode
from social_common.userdata import Section, UserData

from media import store, views


def user_data(db: AsyncConnectionPool, public_base_url: str) -> UserData:
    async def uploads(
        user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> Sequence[tuple[uuid.UUID, bytes]]:
        async with db.connection() as conn:
            found = await store.owned_after(conn, user_id, after, limit)
        return [(media.id, encode(views.exported_media(media, public_base_url))) for media in found]

    return UserData([Section("media", uploads)])

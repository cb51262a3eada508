"""What messages keeps of an account, for its export: the messages it sent."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool
from social_common.models import encode
from social_common.userdata import Section, UserData

from messages import store, views


def user_data(db: AsyncConnectionPool) -> UserData:
    async def sent(
        user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> Sequence[tuple[uuid.UUID, bytes]]:
        async with db.connection() as conn:
            found = await store.sent_after(conn, user_id, after, limit)
        return [
            (
                message.id,
                encode(
                    views.ExportedMessage(
                        id=message.id,
                        post_id=message.post_id,
                        message=message.body,
                        created_at=message.created_at,
                    )
                ),
            )
            for message in found
        ]

    return UserData([Section("messages", sent)])

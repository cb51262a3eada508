"""What messages keeps of an account, for its export: the messages it sent."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from social_common.userdata import UserData, query_section

from messages import store, views


def user_data(db: AsyncConnectionPool) -> UserData:
    return UserData(
        [
            query_section(
                "messages", db, store.sent_after, lambda m: (m.id, views.exported_message(m))
            )
        ]
    )

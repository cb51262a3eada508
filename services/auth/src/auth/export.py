"""An account's export (GET /api/v1/users/profile/export): its profile and
follows from auth, and from each service that keeps more of it (the roster's
user_data_keepers) that service's sections, as one JSON object streamed a
page at a time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import grpc
from psycopg_pool import AsyncConnectionPool
from social_common.models import encode
from social_common.userdata import (
    Section,
    UserData,
    first_page,
    local_source,
    peer_source,
    query_section,
    sections_json,
)

from auth import store, views
from auth.service import AuthService


def user_data(db: AsyncConnectionPool) -> UserData:
    """What auth keeps of an account besides its profile: its follows."""

    def follows(direction: str) -> Section:
        async def fetch(
            conn: store.Conn, user_id: uuid.UUID, after: uuid.UUID, limit: int
        ) -> list[store.FollowEntry]:
            return await store.follows_after(conn, direction, user_id, after, limit)

        return query_section(
            direction, db, fetch, lambda entry: (entry.id, views.follow_entry(entry))
        )

    return UserData([follows("following"), follows("followers")])


class Exporter:
    def __init__(
        self, service: AuthService, own: UserData, keepers: Sequence[grpc.aio.Channel]
    ) -> None:
        self.service = service
        self.own = own
        self.keepers = keepers

    async def archive(self, user_id: uuid.UUID) -> tuple[str, AsyncIterator[bytes]]:
        """The account's username and its archive. The first page of every
        part is read before this returns, so that a service which is away
        fails the export (503) before anything is sent; one that fails later
        cuts the response off, unterminated, rather than leave out a part."""
        user = await self.service.me(user_id)
        sources = [
            local_source(self.own, user_id),
            *(peer_source(c, user_id) for c in self.keepers),
        ]
        started = await asyncio.gather(*(first_page(source) for source in sources))
        head = encode({"exported_at": datetime.now(UTC), "account": views.own_user(user)})

        async def body() -> AsyncIterator[bytes]:
            yield head[:-1]  # the object stays open for the sections
            async for chunk in sections_json(started):
                yield chunk
            yield b"}"

        return user.username, body()

"""Public profiles of users, for hydrating what they wrote: fetched from auth
in batches (gRPC ``GetUsers``) and cached in L1 and Redis for ``ttl_seconds``
each, so a new display name shows within twice that."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import grpc
import redis.asyncio as aioredis
from social.auth.v1 import auth_pb2, auth_pb2_grpc

from social_common.cache import Entry, TieredCache
from social_common.models import UuidText, View
from social_common.peers import PEER_TIMEOUT


class Author(View):
    """A user as what they wrote shows them (the view of a profile below)."""

    id: UuidText
    username: str
    display_name: str


class AuthorDirectory:
    def __init__(
        self,
        redis_client: aioredis.Redis,
        auth: grpc.aio.Channel,
        *,
        ttl_seconds: int,
        local_max_entries: int = 100_000,
    ) -> None:
        self.stub = auth_pb2_grpc.AuthServiceStub(auth)

        def cache(name: str) -> TieredCache:
            return TieredCache(
                redis_client,
                name,
                local_ttl_ms=ttl_seconds * 1000,
                local_max_entries=local_max_entries,
                shared_ttl_seconds=ttl_seconds,
                kind=Author,
            )

        self.by_id = cache("authors")
        # Lowercased username -> the user, for routes that name users by username.
        self.by_name = cache("usernames")

    async def authors(self, ids: Iterable[str]) -> dict[str, Author]:
        """The users among ``ids`` that exist, by id."""
        return await self.by_id.get_many(set(ids), self._load_ids)

    async def by_username(self, username: str) -> Author | None:
        key = username.lower()
        found = await self.by_name.get_many([key], self._load_names)
        return found.get(key)

    async def _load_ids(self, ids: Sequence[str]) -> Mapping[str, Entry]:
        reply = await self.stub.GetUsers(auth_pb2.GetUsersRequest(ids=ids), timeout=PEER_TIMEOUT)
        # Unknown ids are cached as absent too, so a stream of them stays cheap.
        found: dict[str, Entry] = {i: (0, None) for i in ids}
        found.update((u.id, (0, _profile(u))) for u in reply.users)
        return found

    async def _load_names(self, names: Sequence[str]) -> Mapping[str, Entry]:
        reply = await self.stub.GetUsers(
            auth_pb2.GetUsersRequest(usernames=names), timeout=PEER_TIMEOUT
        )
        # Unknown names are not remembered: one may be registered a moment later.
        return {u.username.lower(): (0, _profile(u)) for u in reply.users}


def _profile(user: auth_pb2.User) -> Author:
    return Author(id=user.id, username=user.username, display_name=user.display_name)

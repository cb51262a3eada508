"""The posts this process holds, and the announcement of their changes.

Reads go through three layers: an in-process L1 (``settings.local_cache_ms``),
Redis (L2) and Postgres. Post documents are cached by id with their row
version (see social_common.cache); the ids of feed pages (global and per
author) are cached in L1 only, per list, and dropped when the list changes.
Every change is announced on a broadcast channel so that every process of
the service drops what it holds of it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from social_common.cache import Broadcast, LocalCache, TieredCache

from posts.service import after_commit
from posts.settings import PostsSettings
from posts.views import PostDocument

# The list of everyone's posts; each author's is author_list(author_id).
GLOBAL = "global"

# A page of a list: the ids of its posts (as text, the documents' keys) and the next cursor.
PageIds = tuple[list[str], str | None]


def author_list(author_id: uuid.UUID) -> str:
    return f"user:{author_id}"


class FeedPages:
    """L1 of feed pages: per list (the global feed, one author's posts), the
    post ids of a page and the next cursor. A change to a list drops all its
    pages, and a page read from Postgres before that change is not kept.

    Lists share ``BUCKETS`` generation counters by hash, so memory stays
    bounded however many authors post; a change to one list also drops the
    pages of the lists in its bucket, which costs one re-read each.
    """

    BUCKETS = 4096

    def __init__(self, ttl_ms: int, max_entries: int) -> None:
        self.entries = LocalCache(ttl_ms, max_entries)
        self.generations = [0] * self.BUCKETS

    def generation(self, name: str) -> int:
        return self.generations[hash(name) % self.BUCKETS]

    def get(self, name: str, before: uuid.UUID | None, limit: int) -> PageIds | None:
        found = self.entries.get(f"{name}|{before or ''}|{limit}")
        if found is None or found[0] != self.generation(name):
            return None
        value: PageIds = found[1]
        return value

    def put(
        self, name: str, before: uuid.UUID | None, limit: int, generation: int, value: PageIds
    ) -> None:
        if generation == self.generation(name):
            self.entries.put(f"{name}|{before or ''}|{limit}", generation, value)

    def changed(self, name: str) -> None:
        self.generations[hash(name) % self.BUCKETS] += 1

    def clear(self) -> None:
        self.entries.clear()
        self.generations = [g + 1 for g in self.generations]


class PostCache:
    """The post documents (L1 and Redis, by the text of their ids), the feed
    pages (L1), and the generation of what this process has rendered."""

    def __init__(self, redis_client: aioredis.Redis, settings: PostsSettings) -> None:
        self.documents = TieredCache(
            redis_client,
            "posts",
            local_ttl_ms=settings.local_cache_ms,
            local_max_entries=settings.local_cache_entries,
            shared_ttl_seconds=settings.shared_cache_seconds,
            kind=PostDocument,
        )
        self.pages = FeedPages(settings.local_cache_ms, settings.local_cache_entries)
        self.broadcast = Broadcast(redis_client, "posts:changes")
        # Moves with every change this process learns of: what was rendered
        # from an older generation is not served again.
        self.generation = 0

    async def changed(
        self,
        post_id: uuid.UUID,
        version: int,
        document: PostDocument | None,
        lists: Sequence[str] = (),
    ) -> None:
        """Called after a commit: this process sees the change at once (its
        L1 first, then Redis), the others when the broadcast reaches them
        (``document`` None: the post is gone). Failures of Redis are logged:
        the change stands (see after_commit); put_many fills L1 before it
        awaits anything."""
        for name in lists:
            self.pages.changed(name)
        self.generation += 1
        key = str(post_id)
        with after_commit(post_id):
            await self.documents.put_many({key: (version, document)})
        with after_commit(post_id):
            await self.broadcast.publish({"posts": {key: version}, "lists": list(lists)})

    def _on_broadcast(self, message: Mapping[str, Any]) -> None:
        for key, version in message.get("posts", {}).items():
            self.documents.local.drop(key, older_than=version)
        for name in message.get("lists", []):
            self.pages.changed(name)
        self.generation += 1

    def _on_broadcast_reset(self) -> None:
        self.documents.local.clear()
        self.pages.clear()
        self.generation += 1

    async def listen_for_changes(self) -> None:
        await self.broadcast.listen(self._on_broadcast, self._on_broadcast_reset)

"""The events the posts service consumes: its own posts fanned out to home
timelines, follows and unfollows that make timelines stale, the messages
counted on each post, and deleted accounts, whose posts and likes go."""

from __future__ import annotations

import contextlib
import uuid

import grpc
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool
from social.auth.v1 import auth_pb2, auth_pb2_grpc
from social.auth.v1.events_pb2 import UserDeleted, UserFollowed, UserUnfollowed
from social.events.v1.events_pb2 import Envelope
from social.messages.v1.events_pb2 import MessageCreated, MessageDeleted
from social.posts.v1.events_pb2 import PostCreated, PostDeleted
from social_common.cache import LocalCache
from social_common.errors import Problem
from social_common.events import Handler, event_ids
from social_common.logging import get_logger
from social_common.peers import PEER_TIMEOUT, follow_pages
from social_common.tasks import every

from posts import store, views
from posts.cache import PostCache
from posts.settings import PostsSettings
from posts.timelines import Timelines
from posts.writes import PostWrites

log = get_logger(__name__)

FANNED_OUT = Counter("posts_fanout_timelines_total", "Home timelines a new post was written into")

CELEBRITY_CHECK_MS = 60_000
# How long a deleted message is remembered, against a late (re)delivery of its creation.
COUNTED_MESSAGES_KEEP_SECONDS = 7 * 24 * 3600


class PostEvents:
    def __init__(
        self,
        db: AsyncConnectionPool,
        cache: PostCache,
        timelines: Timelines,
        writes: PostWrites,
        auth: grpc.aio.Channel,
        settings: PostsSettings,
    ) -> None:
        self.db = db
        self.cache = cache
        self.timelines = timelines
        self.writes = writes
        self.auth = auth_pb2_grpc.AuthServiceStub(auth)
        self.settings = settings
        # Whether each recent author is fanned out on write (see _is_celebrity).
        self.celebrities = LocalCache(CELEBRITY_CHECK_MS, settings.local_cache_entries)

    def handlers(self) -> dict[str, Handler]:
        return {
            "post.created": self._on_post_created,
            "post.deleted": self._on_post_deleted,
            "user.followed": self._on_followed,
            "user.unfollowed": self._on_unfollowed,
            "message.created": self._on_message_created,
            "message.deleted": self._on_message_deleted,
            "user.deleted": self._on_user_deleted,
        }

    async def _on_user_deleted(self, envelope: Envelope) -> None:
        """A deleted account's posts go as if deleted by their author (their
        post.deleted takes their messages and media along), its likes as if
        taken back, its home timeline with them. Run again, it finds less."""
        ids = event_ids(envelope, UserDeleted, "user_id")
        if ids is None:
            return
        [user_id] = ids
        async with self.db.connection() as conn:
            posts = await store.post_ids_by_author(conn, user_id)
            liked = await store.liked_post_ids(conn, user_id)
        for post_id in posts:
            with contextlib.suppress(Problem):  # gone meanwhile
                await self.writes.delete(post_id, user_id)
        for post_id in liked:
            with contextlib.suppress(Problem):
                await self.writes.like(post_id, user_id, on=False)
        await self.timelines.forget(str(user_id))
        log.info("account_posts_deleted", user_id=str(user_id), posts=len(posts), likes=len(liked))

    # -- fan-out -------------------------------------------------------------

    async def _on_post_created(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, PostCreated, "author_id", "post_id")
        if ids is not None:
            await self._fan_out(*ids, add=True)

    async def _on_post_deleted(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, PostDeleted, "author_id", "post_id")
        if ids is not None:
            await self._fan_out(*ids, add=False)

    async def _fan_out(self, author_id: uuid.UUID, post_id: uuid.UUID, *, add: bool) -> None:
        """Adds a post to (or removes it from) the timelines of its author's
        followers, unless the author has so many that readers merge it in."""
        # As auth and Redis hold them; the followers come from auth as text.
        author, post = str(author_id), str(post_id)
        celebrity = await self._is_celebrity(author)
        change = self.timelines.add if add else self.timelines.remove
        await change([author], [post])
        if celebrity:
            return
        async for page in follow_pages(self.auth, "followers", author, self.settings.fanout_page):
            written = await change(page, [post])
            if add:
                FANNED_OUT.inc(written or 0)

    async def _is_celebrity(self, author: str) -> bool:
        """Whether an author has so many followers that readers merge their
        posts in; asked of auth at most once a minute per author."""
        known = self.celebrities.get(author)
        if known is not None:
            return bool(known[1])
        users = await self.auth.GetUsers(
            auth_pb2.GetUsersRequest(ids=[author]), timeout=PEER_TIMEOUT
        )
        followers = users.users[0].follower_count if users.users else 0
        celebrity = followers >= self.settings.celebrity_followers
        await self.timelines.mark_celebrity(author, on=celebrity)
        self.celebrities.put(author, 0, celebrity)
        return celebrity

    # -- follows -------------------------------------------------------------

    async def _on_followed(self, envelope: Envelope) -> None:
        # Rebuilt at the next read, from auth's answer then: right whatever
        # order follows and unfollows arrive in.
        ids = event_ids(envelope, UserFollowed, "follower_id")
        if ids is not None:
            await self.timelines.forget(str(ids[0]))

    async def _on_unfollowed(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, UserUnfollowed, "follower_id")
        if ids is not None:
            await self.timelines.forget(str(ids[0]))

    # -- messages on posts ---------------------------------------------------

    async def _on_message_created(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, MessageCreated, "message_id", "post_id")
        if ids is not None:
            await self._count_message(*ids, deleted=False)

    async def _on_message_deleted(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, MessageDeleted, "message_id", "post_id")
        if ids is not None:
            await self._count_message(*ids, deleted=True)

    async def _count_message(
        self, message_id: uuid.UUID, post_id: uuid.UUID, *, deleted: bool
    ) -> None:
        # One statement: its own transaction (the pool's autocommit).
        async with self.db.connection() as conn:
            row = await store.count_message(conn, message_id, post_id, deleted=deleted)
        if row is not None:
            await self.cache.changed(row.id, row.version, views.post_document(row))

    async def purge_forever(self, interval: float = 3600.0) -> None:
        """Forgets deleted messages old enough that no event of theirs is still coming."""

        async def purge() -> None:
            async with self.db.connection() as conn:
                await store.purge_counted_messages(conn, COUNTED_MESSAGES_KEEP_SECONDS)

        await every(interval, purge, what="counted_messages_purge")

"""The posts service's rules: posting, the feeds, likes, and the events that
keep home timelines and counters current.

Reads go through three layers: an in-process L1 (``settings.local_cache_ms``),
Redis (L2) and Postgres. Post documents are cached by id with their row
version (see social_common.cache); the ids of feed pages (global and per
author) are cached in L1 only, per list, and dropped when the list changes.
Every change is announced on a broadcast channel so that every process of
the service drops what it holds of it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool
from social.auth.v1 import auth_pb2, auth_pb2_grpc
from social.auth.v1.events_pb2 import UserFollowed, UserUnfollowed
from social.events.v1.events_pb2 import Envelope
from social.media.v1 import media_pb2, media_pb2_grpc
from social.messages.v1.events_pb2 import MessageCreated, MessageDeleted
from social.posts.v1.events_pb2 import PostCreated, PostDeleted, PostLiked
from social_common.authors import AuthorDirectory
from social_common.cache import Broadcast, Entry, LocalCache, TieredCache
from social_common.errors import Problem
from social_common.events import emit
from social_common.ids import parse_uuid, uuid7
from social_common.logging import get_logger
from social_common.pagination import encode_id_cursor
from social_common.peers import PEER_TIMEOUT, follow_pages
from social_common.tasks import every

from posts import store
from posts.likes import LikedAnswer, LikedSets
from posts.settings import PostsSettings
from posts.timelines import Timelines

log = get_logger(__name__)

POSTS_CREATED = Counter("posts_created_total", "Posts created")
POSTS_DELETED = Counter("posts_deleted_total", "Posts deleted")
LIKES = Counter("posts_likes_total", "Likes given and taken back", ["action"])
FANNED_OUT = Counter("posts_fanout_timelines_total", "Home timelines a new post was written into")

PRODUCER = "posts"
CELEBRITY_CHECK_MS = 60_000
GLOBAL = "global"
# How long a deleted message is remembered, against a late (re)delivery of its creation.
COUNTED_MESSAGES_KEEP_SECONDS = 7 * 24 * 3600


def author_list(author_id: str) -> str:
    return f"user:{author_id}"


def not_found() -> Problem:
    return Problem(404, "post_not_found", "No such post.")


@dataclass(frozen=True)
class Page:
    posts: list[dict[str, Any]]
    next_cursor: str | None


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

    def get(self, name: str, page: tuple[str, int]) -> tuple[list[str], str | None] | None:
        found = self.entries.get(f"{name}|{page[0]}|{page[1]}")
        if found is None or found[0] != self.generation(name):
            return None
        value: tuple[list[str], str | None] = found[1]
        return value

    def put(
        self,
        name: str,
        page: tuple[str, int],
        generation: int,
        value: tuple[list[str], str | None],
    ) -> None:
        if generation == self.generation(name):
            self.entries.put(f"{name}|{page[0]}|{page[1]}", generation, value)

    def changed(self, name: str) -> None:
        self.generations[hash(name) % self.BUCKETS] += 1

    def clear(self) -> None:
        self.entries.clear()
        self.generations = [g + 1 for g in self.generations]


class PostsService:
    def __init__(
        self,
        db: AsyncConnectionPool,
        redis_client: aioredis.Redis,
        settings: PostsSettings,
        auth: grpc.aio.Channel,
        media: grpc.aio.Channel,
        authors: AuthorDirectory,
    ) -> None:
        self.db = db
        self.settings = settings
        self.auth = auth_pb2_grpc.AuthServiceStub(auth)
        self.media = media_pb2_grpc.MediaServiceStub(media)
        self.authors = authors
        self.posts = TieredCache(
            redis_client,
            "posts",
            local_ttl_ms=settings.local_cache_ms,
            local_max_entries=settings.local_cache_entries,
            shared_ttl_seconds=settings.shared_cache_seconds,
        )
        self.pages = FeedPages(settings.local_cache_ms, settings.local_cache_entries)
        self.timelines = Timelines(
            redis_client, settings.timeline_size, settings.timeline_ttl_seconds
        )
        self.likes = LikedSets(redis_client)
        self.broadcast = Broadcast(redis_client, "posts:changes")
        # Whether each recent author is fanned out on write (see _is_celebrity).
        self.celebrities = LocalCache(CELEBRITY_CHECK_MS, settings.local_cache_entries)
        # Moves with every change this process learns of: what was rendered
        # from an older generation is not served again.
        self.generation = 0

    # -- changes and their announcement -------------------------------------

    async def _changed(
        self, post_id: str, version: int, document: Any, lists: Sequence[str] = ()
    ) -> None:
        """Called after a commit: this process sees the change at once (its
        L1 first, then Redis), the others when the broadcast reaches them.
        Failures of Redis are logged: the change stands (see _after_commit);
        put_many fills L1 before it awaits anything."""
        for name in lists:
            self.pages.changed(name)
        self.generation += 1
        with _after_commit(post_id):
            await self.posts.put_many({post_id: (version, document)})
        with _after_commit(post_id):
            await self.broadcast.publish({"posts": {post_id: version}, "lists": list(lists)})

    def _on_broadcast(self, message: Mapping[str, Any]) -> None:
        for post_id, version in message.get("posts", {}).items():
            self.posts.local.drop(post_id, older_than=version)
        for name in message.get("lists", []):
            self.pages.changed(name)
        self.generation += 1

    def _on_broadcast_reset(self) -> None:
        self.posts.local.clear()
        self.pages.clear()
        self.generation += 1

    async def listen_for_changes(self) -> None:
        await self.broadcast.listen(self._on_broadcast, self._on_broadcast_reset)

    # -- creating and deleting -----------------------------------------------

    async def create(
        self,
        author_id: uuid.UUID,
        caption: str,
        media_ids: Sequence[uuid.UUID],
        image_url: str | None,
    ) -> dict[str, Any]:
        if image_url is not None:
            media_ids = [await self._media_at(author_id, image_url)]
        post_id = uuid7()
        async with self.db.connection() as conn, conn.transaction():
            # First, inside the transaction: the media becomes this post's (the
            # author's, not yet another post's: checked by media, all or none),
            # and if anything after fails, the post never existed. (If the
            # commit itself failed, the media would stay attached to no post.)
            media = await self._attach(post_id, author_id, media_ids)
            row = await store.insert_post(
                conn, post_id, author_id, caption, [_media_document(m) for m in media]
            )
            created = PostCreated(
                post_id=str(post_id), author_id=str(author_id), media_ids=[m.id for m in media]
            )
            created.created_at.FromDatetime(row.created_at)
            await emit(
                conn,
                producer=PRODUCER,
                event_type="post.created",
                key=str(post_id),
                payload=created,
            )
        POSTS_CREATED.inc()
        await self._changed(
            str(post_id), row.version, row.document(), [GLOBAL, author_list(str(author_id))]
        )
        with _after_commit(post_id):
            # The author sees their post in their feed at once; followers get it by fan-out.
            await self.timelines.add([str(author_id)], [str(post_id)])
        return await self._render_committed(row, author_id, liked=False)

    async def _media_at(self, owner: uuid.UUID, image_url: str) -> uuid.UUID:
        """The seed's form: the id of the owner's media whose rendition is at ``image_url``."""
        reply = await self.media.GetMedia(
            media_pb2.GetMediaRequest(owner_id=str(owner), urls=[image_url]),
            timeout=PEER_TIMEOUT,
        )
        media_id = parse_uuid(reply.media[0].id) if len(reply.media) == 1 else None
        if media_id is None:
            raise _media_problem("image_url must be the URL of an image you uploaded here")
        return media_id

    async def _attach(
        self, post_id: uuid.UUID, owner: uuid.UUID, media_ids: Sequence[uuid.UUID]
    ) -> list[media_pb2.Media]:
        try:
            reply = await self.media.AttachMedia(
                media_pb2.AttachMediaRequest(
                    ids=[str(i) for i in media_ids], post_id=str(post_id), owner_id=str(owner)
                ),
                timeout=PEER_TIMEOUT,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            raise _media_problem(
                "each media must be an upload of yours that no other post has"
            ) from None
        return list(reply.media)

    async def delete(self, post_id: uuid.UUID, author_id: uuid.UUID) -> None:
        async with self.db.connection() as conn, conn.transaction():
            row = await store.delete_post(conn, post_id, author_id)
            if row is None:
                raise not_found()  # someone else's post looks exactly like no post
            await emit(
                conn,
                producer=PRODUCER,
                event_type="post.deleted",
                key=str(post_id),
                payload=PostDeleted(
                    post_id=str(post_id),
                    author_id=str(author_id),
                    media_ids=[str(m["id"]) for m in row.media],
                ),
            )
        POSTS_DELETED.inc()
        # A tombstone, one version past the row's last.
        await self._changed(
            str(post_id), row.version + 1, None, [GLOBAL, author_list(str(author_id))]
        )
        with _after_commit(post_id):
            await self.timelines.remove([str(author_id)], [str(post_id)])

    async def like(self, post_id: uuid.UUID, user_id: uuid.UUID, *, on: bool) -> dict[str, Any]:
        async with self.db.connection() as conn, conn.transaction():
            row, changed = await store.set_like(conn, post_id, user_id, on=on)
            if row is None:
                raise not_found()
            if changed and on:
                await emit(
                    conn,
                    producer=PRODUCER,
                    event_type="post.liked",
                    key=str(post_id),
                    payload=PostLiked(
                        post_id=str(post_id),
                        author_id=str(row.author_id),
                        user_id=str(user_id),
                        like_count=row.like_count,
                    ),
                )
        # Set even when nothing changed: that repairs a set whose update was lost.
        with _after_commit(post_id):
            await self.likes.set(str(user_id), str(post_id), liked=on)
        if changed:
            LIKES.labels("like" if on else "unlike").inc()
            await self._changed(str(post_id), row.version, row.document())
        return await self._render_committed(row, user_id, liked=on)

    async def _render_committed(
        self, row: store.PostRow, viewer: uuid.UUID, *, liked: bool
    ) -> dict[str, Any]:
        """The answer to a write that committed: nothing left to fail but the
        author's profile (cached), and what the viewer likes is known."""
        answer = LikedAnswer(ready=True, liked={str(row.id)} if liked else set(), unsure=[])
        rendered = await self.render([row.document()], viewer, answer)
        return rendered[0]

    # -- reading -------------------------------------------------------------

    async def documents(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The cached documents of the posts among ``ids`` that exist."""
        return await self.posts.get_many(ids, self._load_posts)

    async def _load_posts(self, ids: Sequence[str]) -> Mapping[str, Entry]:
        parsed = [u for u in (parse_uuid(i) for i in ids) if u is not None]
        async with self.db.connection() as conn:
            rows = await store.posts_by_ids(conn, parsed)
        # Absent ones are cached as absent (version 0): a creation outranks it.
        found: dict[str, Entry] = {i: (0, None) for i in ids}
        found.update((str(r.id), (r.version, r.document())) for r in rows)
        return found

    async def get(self, post_id: uuid.UUID, viewer: uuid.UUID | None) -> dict[str, Any]:
        found = await self.documents([str(post_id)])
        rendered = await self.render(list(found.values()), viewer)
        if not rendered:
            raise not_found()
        return rendered[0]

    async def _liked(
        self, viewer: uuid.UUID, ids: Sequence[str], answer: LikedAnswer | None = None
    ) -> set[str]:
        """Which of ``ids`` the viewer likes (``answer``: what Redis said already)."""
        user_id = str(viewer)
        if answer is None:
            answer = await self.likes.lookup(user_id, ids)
        if not answer.ready:
            await self.likes.load(user_id, self._load_likes)
            answer = await self.likes.lookup(user_id, ids)
            if not answer.ready:  # an unlike dropped it while it loaded: ask Postgres
                answer = LikedAnswer(ready=True, liked=set(), unsure=list(ids))
        if not answer.unsure:
            return answer.liked
        async with self.db.connection() as conn:
            older = await store.liked(conn, viewer, [uuid.UUID(i) for i in answer.unsure])
        return answer.liked | {str(i) for i in older}

    async def _load_likes(self, user_id: str, limit: int) -> tuple[list[str], bool]:
        async with self.db.connection() as conn:
            ids, more = await store.recent_likes(conn, uuid.UUID(user_id), limit)
        return [str(i) for i in ids], more

    async def render(
        self,
        documents: Sequence[Mapping[str, Any]],
        viewer: uuid.UUID | None,
        liked_answer: LikedAnswer | None = None,
    ) -> list[dict[str, Any]]:
        """Posts as clients see them: with their authors, and whether the
        viewer likes them (``liked_answer``: what Redis said of that already)."""
        if not documents:
            return []
        authors = await self.authors.authors(d["author_id"] for d in documents)
        liked: set[str] = set()
        if viewer is not None:
            liked = await self._liked(viewer, [d["id"] for d in documents], liked_answer)
        posts = []
        for doc in documents:
            author = authors.get(doc["author_id"])
            if author is None:
                continue  # an account that no longer exists
            post = {
                "id": doc["id"],
                "author": author,
                "caption": doc["caption"],
                "media": doc["media"],
                "like_count": doc["like_count"],
                "message_count": doc["message_count"],
                "created_at": doc["created_at"],
            }
            if viewer is not None:
                post["liked_by_me"] = doc["id"] in liked
            posts.append(post)
        return posts

    async def _page_of(
        self,
        ids: Sequence[str],
        next_cursor: str | None,
        viewer: uuid.UUID | None,
        liked_answer: LikedAnswer | None = None,
    ) -> Page:
        found = await self.documents(ids)
        # Posts deleted since the ids were listed are left out.
        posts = await self.render([found[i] for i in ids if i in found], viewer, liked_answer)
        return Page(posts, next_cursor)

    async def list_page(
        self,
        author_id: str | None,
        before: uuid.UUID | None,
        limit: int,
        viewer: uuid.UUID | None,
    ) -> Page:
        """A page of the global feed (no author) or of one author's posts."""
        name = GLOBAL if author_id is None else author_list(author_id)
        key = (str(before or ""), limit)
        cached = self.pages.get(name, key)
        if cached is None:
            generation = self.pages.generation(name)
            async with self.db.connection() as conn:
                found = await store.page_ids(
                    conn,
                    authors=None if author_id is None else [uuid.UUID(author_id)],
                    before=before,
                    limit=limit + 1,
                )
            ids = [str(i) for i in found[:limit]]
            cached = (ids, encode_id_cursor(ids[-1]) if len(found) > limit else None)
            self.pages.put(name, key, generation, cached)
        return await self._page_of(cached[0], cached[1], viewer)

    async def home_page(self, viewer: uuid.UUID, before: str | None, limit: int) -> Page:
        """The viewer's home timeline: their posts and those of whom they follow."""
        user_id = str(viewer)
        page = await self.timelines.page(user_id, before, limit + 1, self.likes)
        rebuilt_from: list[str] | None = None
        if not page.ready:
            rebuilt_from = await self._rebuild(user_id)
            page = await self.timelines.page(user_id, before, limit + 1, self.likes)
        ids = page.ids
        # Authors with very many followers are merged in here, not fanned out;
        # past the newest ids the timeline keeps, Postgres answers, as it does
        # when a follow or unfollow forgot the timeline while it was rebuilt.
        extra_authors = list(page.celebrities)
        if not page.ready and rebuilt_from is not None:
            extra_authors = [user_id, *rebuilt_from]
        elif page.truncated and len(ids) <= limit:
            extra_authors = [user_id, *await self.timelines.followees(user_id)]
        if extra_authors:
            async with self.db.connection() as conn:
                older = await store.page_ids(
                    conn,
                    authors=[uuid.UUID(a) for a in extra_authors],
                    before=parse_uuid(before) if before else None,
                    limit=limit + 1,
                )
            ids = sorted(set(ids) | {str(i) for i in older}, reverse=True)[: limit + 1]
        next_cursor = encode_id_cursor(ids[limit - 1]) if len(ids) > limit else None
        shown = ids[:limit]
        # What the reader likes came with the page, unless other ids were merged in.
        liked_answer = (
            None if extra_authors else LikedSets.read(page.liked[: 2 + len(shown)], shown)
        )
        return await self._page_of(shown, next_cursor, viewer, liked_answer)

    async def _rebuild(self, user_id: str) -> list[str]:
        """Rebuilds a home timeline from auth (whom the user follows) and
        Postgres (their newest posts); returns the followees."""
        await self.timelines.start_rebuild(user_id)
        followees = [
            u
            async for page in follow_pages(
                self.auth, "following", user_id, self.settings.fanout_page
            )
            for u in page
        ]
        size = self.settings.timeline_size
        async with self.db.connection() as conn:
            recent = await store.page_ids(
                conn,
                authors=[uuid.UUID(u) for u in (*followees, user_id)],
                before=None,
                limit=size + 1,
            )
        await self.timelines.finish_rebuild(
            user_id, followees, [str(i) for i in recent[:size]], more=len(recent) > size
        )
        return followees

    # -- events --------------------------------------------------------------

    def event_handlers(self) -> dict[str, Any]:
        return {
            "post.created": self._on_post_created,
            "post.deleted": self._on_post_deleted,
            "user.followed": self._on_followed,
            "user.unfollowed": self._on_unfollowed,
            "message.created": self._on_message_created,
            "message.deleted": self._on_message_deleted,
        }

    async def _fan_out(self, author_id: str, post_id: str, *, add: bool) -> None:
        """Adds a post to (or removes it from) the timelines of its author's
        followers, unless the author has so many that readers merge it in."""
        celebrity = await self._is_celebrity(author_id)
        change = self.timelines.add if add else self.timelines.remove
        await change([author_id], [post_id])
        if celebrity:
            return
        async for page in follow_pages(
            self.auth, "followers", author_id, self.settings.fanout_page
        ):
            written = await change(page, [post_id])
            if add:
                FANNED_OUT.inc(written or 0)

    async def _is_celebrity(self, author_id: str) -> bool:
        """Whether an author has so many followers that readers merge their
        posts in; asked of auth at most once a minute per author."""
        known = self.celebrities.get(author_id)
        if known is not None:
            return bool(known[1])
        users = await self.auth.GetUsers(
            auth_pb2.GetUsersRequest(ids=[author_id]), timeout=PEER_TIMEOUT
        )
        followers = users.users[0].follower_count if users.users else 0
        celebrity = followers >= self.settings.celebrity_followers
        await self.timelines.mark_celebrity(author_id, on=celebrity)
        self.celebrities.put(author_id, 0, celebrity)
        return celebrity

    async def _on_post_created(self, envelope: Envelope) -> None:
        event = PostCreated.FromString(envelope.payload)
        await self._fan_out(event.author_id, event.post_id, add=True)

    async def _on_post_deleted(self, envelope: Envelope) -> None:
        event = PostDeleted.FromString(envelope.payload)
        await self._fan_out(event.author_id, event.post_id, add=False)

    async def _on_followed(self, envelope: Envelope) -> None:
        # Rebuilt at the next read, from auth's answer then: right whatever
        # order follows and unfollows arrive in.
        await self.timelines.forget(UserFollowed.FromString(envelope.payload).follower_id)

    async def _on_unfollowed(self, envelope: Envelope) -> None:
        await self.timelines.forget(UserUnfollowed.FromString(envelope.payload).follower_id)

    async def _count_message(self, message_id: str, post_id: str, *, deleted: bool) -> None:
        message, post = parse_uuid(message_id), parse_uuid(post_id)
        if message is None or post is None:
            log.warning("event_ignored", message_id=message_id, reason="not a UUID")
            return
        # BEGIN and the statement in one round trip, then COMMIT.
        async with self.db.connection() as conn, conn.pipeline(), conn.transaction():
            row = await store.count_message(conn, message, post, deleted=deleted)
        if row is not None:
            await self._changed(str(row.id), row.version, row.document())

    async def _on_message_created(self, envelope: Envelope) -> None:
        event = MessageCreated.FromString(envelope.payload)
        await self._count_message(event.message_id, event.post_id, deleted=False)

    async def _on_message_deleted(self, envelope: Envelope) -> None:
        event = MessageDeleted.FromString(envelope.payload)
        await self._count_message(event.message_id, event.post_id, deleted=True)

    async def purge_forever(self, interval: float = 3600.0) -> None:
        """Forgets deleted messages old enough that no event of theirs is still coming."""

        async def purge() -> None:
            async with self.db.connection() as conn:
                await store.purge_counted_messages(conn, COUNTED_MESSAGES_KEEP_SECONDS)

        await every(interval, purge, what="counted_messages_purge")


@contextlib.contextmanager
def _after_commit(post_id: uuid.UUID | str) -> Iterator[None]:
    """Cache and timeline updates after a commit: the change stands whatever
    happens to them. If Redis fails here, this process's L1 holds the change
    for ``local_cache_ms``; other processes may show the previous version
    until its Redis entry expires (``shared_cache_seconds``); the events (in
    the outbox, never lost) still fan out."""
    try:
        yield
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("after_commit_failed", post_id=str(post_id), error=str(exc))


def _media_problem(message: str) -> Problem:
    return Problem(
        422,
        "invalid_media",
        message[0].upper() + message[1:] + ".",
        errors=[{"field": "media_ids", "message": message}],
    )


def _media_document(media: media_pb2.Media) -> dict[str, Any]:
    """A media as posts show it: what the media service's own API says of it."""
    return {
        "id": media.id,
        "type": media.type,
        "url": media.url,
        "preview_url": media.preview_url,
        "width": media.width,
        "height": media.height,
        "blurhash": media.blurhash,
        "description": media.description,
        "variants": [
            {"name": v.name, "width": v.width, "height": v.height, "url": v.url}
            for v in media.variants
        ],
    }

"""Posting, deleting and liking: each in one transaction with its event (the
outbox), then announced (posts.cache) and written into the author's own home
timeline or the reader's liked set."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import grpc
import msgspec
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool
from social.media.v1 import media_pb2, media_pb2_grpc
from social.posts.v1.events_pb2 import PostCreated, PostDeleted, PostLiked
from social_common.authors import AuthorDirectory
from social_common.errors import Problem
from social_common.events import emit
from social_common.ids import parse_uuid, uuid7
from social_common.media import from_message
from social_common.peers import PEER_TIMEOUT

from posts import store, views
from posts.cache import GLOBAL, PostCache, author_list
from posts.likes import LikedSets
from posts.service import after_commit, not_found
from posts.timelines import Timelines

POSTS_CREATED = Counter("posts_created_total", "Posts created")
POSTS_DELETED = Counter("posts_deleted_total", "Posts deleted")
LIKES = Counter("posts_likes_total", "Likes given and taken back", ["action"])

PRODUCER = "posts"


class PostWrites:
    def __init__(
        self,
        db: AsyncConnectionPool,
        cache: PostCache,
        timelines: Timelines,
        likes: LikedSets,
        media: grpc.aio.Channel,
        authors: AuthorDirectory,
    ) -> None:
        self.db = db
        self.cache = cache
        self.timelines = timelines
        self.likes = likes
        self.media = media_pb2_grpc.MediaServiceStub(media)
        self.authors = authors

    # -- creating and deleting -----------------------------------------------

    async def create(
        self,
        author_id: uuid.UUID,
        caption: str,
        media_ids: Sequence[uuid.UUID],
        image_url: str | None,
    ) -> views.Post:
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
                conn,
                post_id,
                author_id,
                caption,
                msgspec.to_builtins([from_message(m) for m in media]),
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
        document = views.post_document(row)
        await self.cache.changed(post_id, row.version, document, [GLOBAL, author_list(author_id)])
        with after_commit(post_id):
            # The author sees their post in their feed at once; followers get it by fan-out.
            await self.timelines.add([str(author_id)], [str(post_id)])
        return await self._answer(document, liked=False)

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
                    media_ids=[m["id"] for m in row.media],
                ),
            )
        POSTS_DELETED.inc()
        # A tombstone, one version past the row's last.
        await self.cache.changed(post_id, row.version + 1, None, [GLOBAL, author_list(author_id)])
        with after_commit(post_id):
            await self.timelines.remove([str(author_id)], [str(post_id)])

    # -- likes ---------------------------------------------------------------

    async def like(self, post_id: uuid.UUID, user_id: uuid.UUID, *, on: bool) -> views.Post:
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
        with after_commit(post_id):
            await self.likes.set(str(user_id), str(post_id), liked=on)
        document = views.post_document(row)
        if changed:
            LIKES.labels("like" if on else "unlike").inc()
            await self.cache.changed(post_id, row.version, document)
        return await self._answer(document, liked=on)

    async def _answer(self, document: views.PostDocument, *, liked: bool) -> views.Post:
        """The answer to a write that committed, to its writer: nothing left
        to fail but the author's profile (cached), and what the writer likes
        of it is known."""
        authors = await self.authors.authors([document.author_id])
        return views.render([document], authors, {document.id} if liked else set())[0]


def _media_problem(message: str) -> Problem:
    return Problem(
        422,
        "invalid_media",
        message[0].upper() + message[1:] + ".",
        errors=[{"field": "media_ids", "message": message}],
    )

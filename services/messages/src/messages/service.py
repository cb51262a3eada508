"""The messages service's rules: messages on posts, who may delete them, and
the events that tell the rest of the fleet."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc
from psycopg_pool import AsyncConnectionPool
from social.messages.v1.events_pb2 import MessageCreated, MessageDeleted
from social.posts.v1 import posts_pb2, posts_pb2_grpc
from social_common.authors import Author, AuthorDirectory
from social_common.errors import Problem
from social_common.events import emit
from social_common.ids import uuid7
from social_common.pagination import encode_id_cursor
from social_common.peers import PEER_TIMEOUT, find_post
from social_common.validation import clean_text, field_error

from messages import store

PRODUCER = "messages"


MAX_MESSAGE = 2000
# Posts asked for in one GetPosts (its limit).
POSTS_PER_CALL = 1000


def message_text(raw: str) -> str:
    """A message's text, trimmed; refused empty or too long."""
    text = clean_text("message", raw, MAX_MESSAGE)
    if not text:
        raise field_error("message", "must not be empty")
    return text


def post_not_found() -> Problem:
    return Problem(404, "post_not_found", "No such post.")


class MessagesService:
    def __init__(
        self, db: AsyncConnectionPool, posts: grpc.aio.Channel, authors: AuthorDirectory
    ) -> None:
        self.db = db
        self.posts = posts_pb2_grpc.PostsServiceStub(posts)
        self.authors = authors

    async def _post(self, post_id: uuid.UUID) -> posts_pb2.Post:
        """The post, from the posts service; 404 when there is none."""
        post = await find_post(self.posts, str(post_id))
        if post is None:
            raise post_not_found()
        return post

    async def send(self, post_id: uuid.UUID, sender_id: uuid.UUID, body: str) -> store.Message:
        """Stores a message whose text passed message_text."""
        post, authors = await asyncio.gather(
            self._post(post_id), self.authors.authors([str(sender_id)])
        )
        sender = authors.get(str(sender_id))
        message = store.Message(uuid7(), post_id, sender_id, body, datetime.now(UTC))
        # One round trip: BEGIN, the message, its event and COMMIT pipelined.
        async with self.db.connection() as conn, conn.pipeline(), conn.transaction():
            await store.insert_message(conn, message)
            created = MessageCreated(
                message_id=str(message.id),
                post_id=str(post_id),
                sender_id=str(sender_id),
                text=body,
                post_author_id=post.author_id,
                sender_username=sender.username if sender else "",
                sender_display_name=sender.display_name if sender else "",
            )
            created.created_at.FromDatetime(message.created_at)
            await emit(
                conn,
                producer=PRODUCER,
                event_type="message.created",
                key=str(post_id),
                payload=created,
            )
        return message

    async def page(
        self, post_id: uuid.UUID, after: uuid.UUID | None, limit: int, *, newest_first: bool
    ) -> tuple[list[store.Message], str | None]:
        await self._post(post_id)
        async with self.db.connection() as conn:
            found = await store.page(conn, post_id, after, limit + 1, newest_first=newest_first)
        shown = found[:limit]
        next_cursor = encode_id_cursor(shown[-1].id) if len(found) > limit else None
        return shown, next_cursor

    async def delete(self, post_id: uuid.UUID, message_id: uuid.UUID, user: uuid.UUID) -> None:
        """The sender deletes their message; the post's author any message on
        it. Anyone else is told there is no such message."""
        post = await self._post(post_id)
        moderating = post.author_id == str(user)
        async with self.db.connection() as conn, conn.transaction():
            message = await store.delete_message(
                conn, message_id, post_id, None if moderating else user
            )
            if message is None:
                raise Problem(404, "message_not_found", "No such message.")
            await emit(
                conn,
                producer=PRODUCER,
                event_type="message.deleted",
                key=str(post_id),
                payload=MessageDeleted(
                    message_id=str(message.id),
                    post_id=str(post_id),
                    sender_id=str(message.sender_id),
                    post_author_id=post.author_id,
                ),
            )

    async def delete_sent_by(self, sender_id: uuid.UUID) -> int:
        """Deletes every message a (deleted) account sent, each with its
        message.deleted for the post's count and live readers; returns how many."""
        async with self.db.connection() as conn:
            post_ids = await store.sender_post_ids(conn, sender_id)
        # The posts' authors, for the events' notifications; messages on a
        # post that is gone go with it (post.deleted), with no event.
        authors: dict[uuid.UUID, str] = {}
        for start in range(0, len(post_ids), POSTS_PER_CALL):
            reply = await self.posts.GetPosts(
                posts_pb2.GetPostsRequest(
                    ids=[str(i) for i in post_ids[start : start + POSTS_PER_CALL]]
                ),
                timeout=PEER_TIMEOUT,
            )
            authors |= {uuid.UUID(post.id): post.author_id for post in reply.posts}
        async with self.db.connection() as conn, conn.transaction():
            deleted = await store.delete_sender_messages(conn, sender_id)
            for message in deleted:
                if message.post_id not in authors:
                    continue
                await emit(
                    conn,
                    producer=PRODUCER,
                    event_type="message.deleted",
                    key=str(message.post_id),
                    payload=MessageDeleted(
                        message_id=str(message.id),
                        post_id=str(message.post_id),
                        sender_id=str(sender_id),
                        post_author_id=authors[message.post_id],
                    ),
                )
        return len(deleted)

    async def authors_of(self, messages: Sequence[store.Message]) -> dict[str, Author]:
        """The public profiles of the messages' senders that still exist."""
        return await self.authors.authors(str(m.sender_id) for m in messages)

    async def counts(self, post_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        async with self.db.connection() as conn:
            return await store.counts(conn, post_ids)

    async def rpc_page(
        self, post_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> list[store.Message]:
        async with self.db.connection() as conn:
            return await store.page(conn, post_id, after, limit, newest_first=False)

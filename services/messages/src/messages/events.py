"""Events the messages service consumes: a deleted post takes its messages
along, a deleted account the messages it sent."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool
from social.auth.v1.events_pb2 import UserDeleted
from social.events.v1.events_pb2 import Envelope
from social.posts.v1.events_pb2 import PostDeleted
from social_common.events import Handler, event_ids
from social_common.logging import get_logger

from messages import store
from messages.service import MessagesService

log = get_logger(__name__)


class MessagesEvents:
    def __init__(self, db: AsyncConnectionPool, service: MessagesService) -> None:
        self.db = db
        self.service = service

    def handlers(self) -> dict[str, Handler]:
        return {"post.deleted": self._on_post_deleted, "user.deleted": self._on_user_deleted}

    async def _on_user_deleted(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, UserDeleted, "user_id")
        if ids is None:
            return
        deleted = await self.service.delete_sent_by(ids[0])
        if deleted:
            log.info("account_messages_deleted", user_id=str(ids[0]), count=deleted)

    async def _on_post_deleted(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, PostDeleted, "post_id")
        if ids is None:
            return
        post_id = ids[0]
        async with self.db.connection() as conn:
            deleted = await store.delete_post_messages(conn, post_id)
        if deleted:
            log.info("post_messages_deleted", post_id=str(post_id), count=deleted)

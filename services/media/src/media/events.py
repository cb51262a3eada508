"""Events the media service consumes: a deleted post takes its media along, a
deleted account everything it uploaded."""

from __future__ import annotations

from social.auth.v1.events_pb2 import UserDeleted
from social.events.v1.events_pb2 import Envelope
from social.posts.v1.events_pb2 import PostDeleted
from social_common.events import Handler, event_ids
from social_common.logging import get_logger

from media.service import MediaService

log = get_logger(__name__)


class MediaEvents:
    def __init__(self, service: MediaService) -> None:
        self.service = service

    def handlers(self) -> dict[str, Handler]:
        return {"post.deleted": self._on_post_deleted, "user.deleted": self._on_user_deleted}

    async def _on_user_deleted(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, UserDeleted, "user_id")
        if ids is None:
            return
        count = await self.service.delete_owner_media(ids[0])
        if count:
            log.info("account_media_deleted", user_id=str(ids[0]), count=count)

    async def _on_post_deleted(self, envelope: Envelope) -> None:
        ids = event_ids(envelope, PostDeleted, "post_id", "author_id")
        if ids is None:
            return
        post_id, author_id = ids
        count = await self.service.delete_post_media(post_id, author_id)
        if count:
            log.info("post_media_deleted", post_id=str(post_id), count=count)

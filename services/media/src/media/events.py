"""Events the media service consumes: a deleted post takes its media along."""

from __future__ import annotations

from google.protobuf.message import DecodeError
from social.events.v1.events_pb2 import Envelope
from social.posts.v1.events_pb2 import PostDeleted
from social_common.events import Handler
from social_common.ids import parse_uuid
from social_common.logging import get_logger

from media.service import MediaService

log = get_logger(__name__)


class MediaEvents:
    def __init__(self, service: MediaService) -> None:
        self.service = service

    def handlers(self) -> dict[str, Handler]:
        return {"post.deleted": self._on_post_deleted}

    async def _on_post_deleted(self, envelope: Envelope) -> None:
        try:
            event = PostDeleted.FromString(envelope.payload)
        except DecodeError:
            event = None
        post_id = parse_uuid(event.post_id) if event else None
        author_id = parse_uuid(event.author_id) if event else None
        if post_id is None or author_id is None:
            # No retry can mend it: logged, and done.
            log.error("post_deleted_malformed", event_id=envelope.id, key=envelope.key)
            return
        count = await self.service.delete_post_media(post_id, author_id)
        if count:
            log.info("post_media_deleted", post_id=str(post_id), count=count)

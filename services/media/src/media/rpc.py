"""The media service's gRPC API for its peers."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from social.media.v1 import media_pb2, media_pb2_grpc
from social_common.ids import parse_uuid
from social_common.media import to_message

from media import store, views
from media.service import MediaService

MAX_BATCH = 100
_STATES = {
    "pending": media_pb2.MEDIA_STATE_PENDING,
    "attached": media_pb2.MEDIA_STATE_ATTACHED,
}

Context = grpc.aio.ServicerContext[Any, Any]


class MediaRpc(media_pb2_grpc.MediaServiceServicer):
    def __init__(self, service: MediaService, public_base_url: str) -> None:
        self.service = service
        self.public_base_url = public_base_url

    async def GetMedia(
        self, request: media_pb2.GetMediaRequest, context: Context
    ) -> media_pb2.GetMediaResponse:
        owner = parse_uuid(request.owner_id)
        if owner is None or len(request.ids) + len(request.urls) > MAX_BATCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"owner_id must be a UUID; at most {MAX_BATCH} ids and urls",
            )
        assert owner is not None
        ids = {i for i in (parse_uuid(raw) for raw in request.ids) if i is not None}
        # A rendition's URL names its media: keys start with the media id.
        prefix = self.public_base_url + "/"
        by_url: dict[uuid.UUID, str] = {}
        for url in request.urls:
            media_id = parse_uuid(url.removeprefix(prefix).split("/", 1)[0])
            if url.startswith(prefix) and media_id is not None:
                by_url[media_id] = url
        wanted = list(ids | by_url.keys())
        found = await self.service.many(wanted, owner) if wanted else []
        reply = media_pb2.GetMediaResponse()
        for media in found:
            message = self._message(media)
            urls = {message.url, *(v.url for v in message.variants)}
            if media.id not in ids and by_url.get(media.id) not in urls:
                continue  # found by a URL that is none of its renditions'
            reply.media.append(message)
        return reply

    def _message(self, media: store.Media) -> media_pb2.Media:
        return to_message(
            views.media(media, self.public_base_url),
            owner_id=str(media.owner_id),
            state=_STATES[media.state],
            post_id=str(media.post_id or ""),
        )

    async def AttachMedia(
        self, request: media_pb2.AttachMediaRequest, context: Context
    ) -> media_pb2.AttachMediaResponse:
        post_id, owner = parse_uuid(request.post_id), parse_uuid(request.owner_id)
        ids = [parse_uuid(raw) for raw in request.ids]
        if post_id is None or owner is None or not ids or None in ids or len(ids) > MAX_BATCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "post_id, owner_id and ids must be UUIDs"
            )
        assert post_id is not None
        assert owner is not None
        valid = [i for i in ids if i is not None]
        attached = await self.service.attach(valid, owner, post_id)
        if attached is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "some media is missing, not ready, or attached to another post",
            )
        assert attached is not None
        return media_pb2.AttachMediaResponse(media=[self._message(m) for m in attached])

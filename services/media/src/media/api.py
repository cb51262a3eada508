"""The media service's REST API (reached through the gateway)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence

from msgspec import UNSET
from social_common.errors import Problem
from social_common.ratelimit import Limit, RateLimiter, raise_if_limited
from social_common.rest import json_response, path_uuid, read_body, read_model
from social_common.tokens import TokenVerifier, authenticate
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from media import imaging, store, views
from media.service import Incoming, MediaService
from media.settings import MediaSettings

# Room for the multipart envelope and a description around a 10 MiB file.
MAX_MULTIPART = imaging.MAX_BYTES + 64 * 1024
# The form fields an upload may carry (gateway/openapi.in.yaml, ImageUpload).
UPLOAD_FIELDS = {"file", "image", "description"}


class MediaApi:
    def __init__(
        self,
        service: MediaService,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        settings: MediaSettings,
    ) -> None:
        self.service = service
        self.verifier = verifier
        self.limiter = limiter
        self.settings = settings

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/v1/media", self.upload, methods=["POST"]),
            Route("/api/v1/upload/image", self.upload, methods=["POST"]),
            Route("/api/v1/media/uploads", self.create_direct_upload, methods=["POST"]),
            Route(
                "/api/v1/media/uploads/{upload_id}/complete",
                self.complete_direct_upload,
                methods=["POST"],
            ),
            Route("/api/v1/media/{media_id}", self.one, methods=["GET", "PATCH", "DELETE"]),
        ]

    async def _owner(self, request: Request) -> uuid.UUID:
        return (await authenticate(request, self.verifier)).user_id

    async def _spend_upload(self, owner: uuid.UUID) -> dict[str, str]:
        result = await self.limiter.hit(Limit("upload_user", str(owner), self.settings.upload_rate))
        raise_if_limited(result)
        return result.headers()

    def _view(self, media: store.Media) -> views.Media:
        return views.media(media, self.settings.public_base_url)

    async def upload(self, request: Request) -> Response:
        owner = await self._owner(request)
        limit_headers = await self._spend_upload(owner)
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise Problem(415, "unsupported_media_type", "Send the image as multipart/form-data.")

        async def read() -> Incoming:
            # Called once a processing slot is ours: only then is the body read.
            body = await read_body(request, MAX_MULTIPART)

            async def stream() -> AsyncGenerator[bytes, None]:
                yield body

            try:
                form = await MultiPartParser(
                    request.headers, stream(), max_files=1, max_fields=4
                ).parse()
            except MultiPartException as exc:
                raise Problem(400, "invalid_multipart", exc.message) from None
            unknown = sorted(set(form.keys()) - UPLOAD_FIELDS)
            if unknown:
                # Refused, never ignored, like an unknown member of a JSON body.
                raise Problem(
                    422,
                    "validation_failed",
                    f"Unknown form field: {unknown[0]}.",
                    errors=[{"field": name, "message": "unknown field"} for name in unknown],
                )
            # The seed's field is "image"; "file" is the documented one. One of them, once.
            files = form.getlist("file") + form.getlist("image")
            upload = files[0] if len(files) == 1 else None
            if not isinstance(upload, UploadFile):
                raise Problem(
                    422,
                    "validation_failed",
                    "Attach the image once, as the form field 'file'.",
                    errors=[{"field": "file", "message": "required"}],
                )
            description = form.get("description", "")
            if not isinstance(description, str):
                raise Problem(422, "validation_failed", "description must be text.")
            try:
                return Incoming(await upload.read(), description)
            finally:
                await upload.close()

        media = await self.service.ingest(owner, read)
        return json_response(self._view(media), 201, headers=limit_headers)

    async def one(self, request: Request) -> Response:
        owner = await self._owner(request)
        media_id = path_uuid(request, "media_id", Problem(404, "media_not_found", "No such media."))
        if request.method == "GET":
            return json_response(self._view(await self.service.get(media_id, owner)))
        if request.method == "PATCH":
            body = await read_model(request, views.MediaDescription)
            media = await self.service.describe(media_id, owner, body.description)
            return json_response(self._view(media))
        await self.service.delete(media_id, owner)
        return Response(status_code=204)

    async def create_direct_upload(self, request: Request) -> Response:
        owner = await self._owner(request)
        limit_headers = await self._spend_upload(owner)
        body = await read_model(request, views.DirectUploadRequest)
        upload, form = await self.service.create_direct_upload(
            owner, body.content_type, "" if body.description is UNSET else body.description
        )
        return json_response(
            views.direct_upload(upload, form, imaging.MAX_BYTES), 201, headers=limit_headers
        )

    async def complete_direct_upload(self, request: Request) -> Response:
        owner = await self._owner(request)
        upload_id = path_uuid(
            request,
            "upload_id",
            Problem(404, "upload_not_found", "No such upload, or it has expired."),
        )
        media = await self.service.complete_direct_upload(upload_id, owner)
        return json_response(self._view(media), 201)

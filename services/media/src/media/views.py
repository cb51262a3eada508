"""What clients of media send and see: renditions' URLs under the public base."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType
from social_common.media import PostMedia, Variant
from social_common.models import Body, Moment, Url, UuidText, View, text_pattern

from media import store
from media.service import DIRECT_UPLOAD_TYPES, MAX_DESCRIPTION

PREVIEW = "w640"

Description = Annotated[
    str,
    Meta(
        description="Alt text; no control characters but line feeds and tabs.",
        extra_json_schema={"maxLength": MAX_DESCRIPTION, "pattern": text_pattern(keep="\n\t")},
    ),
]


class DirectUploadRequest(Body):
    content_type: Annotated[str, Meta(extra_json_schema={"enum": sorted(DIRECT_UPLOAD_TYPES)})]
    description: Description | UnsetType = UNSET


class MediaDescription(Body):
    description: Description


class Media(PostMedia):
    state: Literal["pending", "attached"]
    created_at: Moment


class DirectUpload(View):
    """POST the file to url as multipart/form-data with these fields (and the
    file last), before expires_at."""

    id: uuid.UUID
    url: Url
    fields: dict[str, str]
    max_bytes: int
    expires_at: Moment


class ExportedMedia(Media):
    """An upload of one's, in one's export."""

    post_id: Annotated[UuidText | None, Meta(description="The post it is part of, if any.")]


# The bodies the OpenAPI document describes (make openapi).
SCHEMAS = (DirectUploadRequest, MediaDescription, Media, DirectUpload, ExportedMedia)


def media(found: store.Media, public_base_url: str) -> Media:
    def url(rendition: dict[str, Any]) -> str:
        return f"{public_base_url}/{rendition['key']}"

    original = found.renditions[0]
    preview = next((r for r in found.renditions if r["name"] == PREVIEW), found.renditions[-1])
    return Media(
        id=str(found.id),
        type="image",
        state=found.state,  # type: ignore[arg-type]  # the column's check allows no other
        url=url(original),
        preview_url=url(preview),
        width=found.width,
        height=found.height,
        blurhash=found.blurhash,
        description=found.description,
        variants=[Variant(r["name"], r["width"], r["height"], url(r)) for r in found.renditions],
        created_at=found.created_at,
    )


def direct_upload(upload: store.DirectUpload, form: dict[str, Any], max_bytes: int) -> DirectUpload:
    return DirectUpload(
        id=upload.id,
        url=form["url"],
        fields=form["fields"],
        max_bytes=max_bytes,
        expires_at=upload.expires_at,
    )


def exported_media(found: store.Media, public_base_url: str) -> ExportedMedia:
    shown = media(found, public_base_url)
    return ExportedMedia(
        **msgspec.structs.asdict(shown),
        post_id=None if found.post_id is None else str(found.post_id),
    )

"""How an image looks to clients wherever it shows: in the media service's
answers (which add its state) and inside the posts that carry it; and the
one translation between that and the media service's gRPC message."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta
from social.media.v1 import media_pb2

from social_common.models import Url, UuidText, View


class Variant(View):
    # Text, not an enum: a rendition added later must not make the posts
    # that already carry it unreadable.
    name: Annotated[str, Meta(examples=["original", "w1080", "w640", "w320"])]
    width: int
    height: int
    url: Url


class PostMedia(View):
    """A media as a post shows it (the media service's Media without its state)."""

    id: UuidText
    type: Annotated[str, Meta(examples=["image"])]
    url: Annotated[Url, Meta(description="The original (long side at most 4096 px).")]
    preview_url: Url
    width: int
    height: int
    blurhash: str
    description: str
    variants: list[Variant]


def to_message(media: PostMedia, **more: Any) -> media_pb2.Media:
    """The media as the media service answers its peers (``more``: the
    fields clients are not shown, such as the owner)."""
    return media_pb2.Media(
        id=media.id,
        type=media.type,
        url=media.url,
        preview_url=media.preview_url,
        width=media.width,
        height=media.height,
        blurhash=media.blurhash,
        description=media.description,
        variants=[
            media_pb2.Variant(name=v.name, width=v.width, height=v.height, url=v.url)
            for v in media.variants
        ],
        **more,
    )


def from_message(message: media_pb2.Media) -> PostMedia:
    """What a post shows of a media the media service described."""
    return PostMedia(
        id=message.id,
        type=message.type,
        url=message.url,
        preview_url=message.preview_url,
        width=message.width,
        height=message.height,
        blurhash=message.blurhash,
        description=message.description,
        variants=[
            Variant(name=v.name, width=v.width, height=v.height, url=v.url)
            for v in message.variants
        ],
    )

"""How an image looks to clients wherever it shows: in the media service's
answers (which add its state) and inside the posts that carry it."""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

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

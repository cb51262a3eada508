"""How an image looks to clients wherever it shows: in the media service's
answers (which add its state) and inside the posts that carry it."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from social_common.models import UuidText, View

Url = Annotated[str, Meta(extra_json_schema={"format": "uri"})]


class Variant(View):
    name: Literal["original", "w1080", "w640", "w320"]
    width: int
    height: int
    url: Url


class PostMedia(View):
    """A media as a post shows it (the media service's Media without its state)."""

    id: UuidText
    type: Literal["image"]
    url: Annotated[Url, Meta(description="The original (long side at most 4096 px).")]
    preview_url: Url
    width: int
    height: int
    blurhash: str
    description: str
    variants: list[Variant]

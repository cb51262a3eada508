"""What clients of posts send and see, and the document a post is cached as.

Pure functions: what they need (authors, likes) is fetched by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import UNSET, Meta, UnsetType
from social_common.authors import Author
from social_common.media import PostMedia
from social_common.models import Body, Moment, Url, UuidText, View, text_pattern

from posts import store
from posts.service import MAX_CAPTION, MAX_MEDIA

Caption = Annotated[
    str,
    Meta(
        description="No control characters but line feeds.",
        extra_json_schema={"maxLength": MAX_CAPTION, "pattern": text_pattern()},
    ),
]


class NewPost(Body):
    """Either media_ids, or the seed's image_url (the URL of one of the caller's uploads here)."""

    # Checked by the api with its own message (posts.api._media_choice).
    json_schema_extra: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["media_ids"]}, {"required": ["image_url"]}]
    }

    caption: Caption = ""
    media_ids: (
        Annotated[
            list[UuidText],
            Meta(extra_json_schema={"minItems": 1, "maxItems": MAX_MEDIA, "uniqueItems": True}),
        ]
        | UnsetType
    ) = UNSET
    image_url: Url | UnsetType = UNSET


class Post(View):
    id: Annotated[UuidText, Meta(description="A UUIDv7.")]
    author: Author
    caption: Caption
    media: list[PostMedia]
    like_count: int
    message_count: int
    created_at: Moment
    liked_by_me: Annotated[bool, Meta(description="Only when a token is sent.")] | (
        UnsetType
    ) = UNSET


class PostPage(View):
    items: list[Post]
    next_cursor: str | None


class ExportedPost(View):
    """One's own post, in one's export."""

    id: Annotated[UuidText, Meta(description="A UUIDv7.")]
    caption: Caption
    media: list[PostMedia]
    like_count: int
    message_count: int
    created_at: Moment


class ExportedLike(View):
    """A like of one's, in one's export."""

    post_id: UuidText
    created_at: Moment


# The bodies the OpenAPI document describes (make openapi).
SCHEMAS = (NewPost, Post, PostPage, ExportedPost, ExportedLike)


class PostDocument(msgspec.Struct, kw_only=True):
    """The post as it is cached: all but its author's profile and the
    reader's own like, which are added per request."""

    id: str
    author_id: str
    caption: str
    media: list[PostMedia]
    like_count: int
    message_count: int
    created_at: datetime


def post_document(row: store.PostRow) -> PostDocument:
    return PostDocument(
        id=str(row.id),
        author_id=str(row.author_id),
        caption=row.caption,
        # As the media service described each when the post was made (JSON in the row).
        media=msgspec.convert(row.media, list[PostMedia]),
        like_count=row.like_count,
        message_count=row.message_count,
        created_at=row.created_at,
    )


def render(
    documents: Sequence[PostDocument], authors: Mapping[str, Author], liked: Set[str] | None
) -> list[Post]:
    """Posts as clients see them: with their authors (by id), and whether the
    reader likes them (``liked``: the ids they like among these; None for a
    reader without a token, who is not told)."""
    posts = []
    for doc in documents:
        author = authors.get(doc.author_id)
        if author is None:
            continue  # an account that no longer exists
        posts.append(
            Post(
                id=doc.id,
                author=author,
                caption=doc.caption,
                media=doc.media,
                like_count=doc.like_count,
                message_count=doc.message_count,
                created_at=doc.created_at,
                liked_by_me=UNSET if liked is None else doc.id in liked,
            )
        )
    return posts


def exported_post(row: store.PostRow) -> ExportedPost:
    document = post_document(row)
    return ExportedPost(
        id=document.id,
        caption=document.caption,
        media=document.media,
        like_count=document.like_count,
        message_count=document.message_count,
        created_at=document.created_at,
    )


def exported_like(row: store.LikeRow) -> ExportedLike:
    return ExportedLike(post_id=str(row.post_id), created_at=row.created_at)

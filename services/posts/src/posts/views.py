"""What clients see of posts: the document a post is cached as, the media it
shows, and a post as a reader gets it (with its author, and whether the
reader likes it). Pure functions: what they need is fetched by the caller."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from social.media.v1 import media_pb2
from social_common.views import timestamp

from posts import store


@dataclass(frozen=True)
class Page:
    posts: list[dict[str, Any]]
    next_cursor: str | None


def post_document(row: store.PostRow) -> dict[str, Any]:
    """The post as it is cached: all but its author's profile and the
    reader's own like, which are added per request."""
    return {
        "id": str(row.id),
        "author_id": str(row.author_id),
        "caption": row.caption,
        "media": row.media,
        "like_count": row.like_count,
        "message_count": row.message_count,
        "created_at": timestamp(row.created_at),
    }


def media_document(media: media_pb2.Media) -> dict[str, Any]:
    """A media as posts show it: what the media service's own API says of it."""
    return {
        "id": media.id,
        "type": media.type,
        "url": media.url,
        "preview_url": media.preview_url,
        "width": media.width,
        "height": media.height,
        "blurhash": media.blurhash,
        "description": media.description,
        "variants": [
            {"name": v.name, "width": v.width, "height": v.height, "url": v.url}
            for v in media.variants
        ],
    }


def render(
    documents: Sequence[Mapping[str, Any]],
    authors: Mapping[str, dict[str, Any]],
    liked: Set[str] | None,
) -> list[dict[str, Any]]:
    """Posts as clients see them: with their authors (by id), and whether the
    reader likes them (``liked``: the ids they like among these; None for a
    reader without a token, who is not told)."""
    posts = []
    for doc in documents:
        author = authors.get(doc["author_id"])
        if author is None:
            continue  # an account that no longer exists
        post = {
            "id": doc["id"],
            "author": author,
            "caption": doc["caption"],
            "media": doc["media"],
            "like_count": doc["like_count"],
            "message_count": doc["message_count"],
            "created_at": doc["created_at"],
        }
        if liked is not None:
            post["liked_by_me"] = doc["id"] in liked
        posts.append(post)
    return posts

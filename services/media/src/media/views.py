"""How media looks to clients and peers: URLs under the public base."""

from __future__ import annotations

from typing import Any

from media import store

PREVIEW = "w640"


def media_document(media: store.Media, public_base_url: str) -> dict[str, Any]:
    def url(rendition: dict[str, Any]) -> str:
        return f"{public_base_url}/{rendition['key']}"

    original = media.renditions[0]
    preview = next((r for r in media.renditions if r["name"] == PREVIEW), media.renditions[-1])
    return {
        "id": str(media.id),
        "type": "image",
        "state": media.state,
        "url": url(original),
        "preview_url": url(preview),
        "width": media.width,
        "height": media.height,
        "blurhash": media.blurhash,
        "description": media.description,
        "variants": [
            {"name": r["name"], "width": r["width"], "height": r["height"], "url": url(r)}
            for r in media.renditions
        ],
        "created_at": media.created_at.isoformat().replace("+00:00", "Z"),
    }

"""Cursor pagination: opaque cursors, clamped limits, ``Link`` headers.

A cursor is the sort key of the last item of a page, as URL-safe base64 of
JSON. Clients treat it as opaque; a tampered one is refused (422), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.datastructures import URL

from social_common.errors import Problem
from social_common.ids import parse_uuid
from social_common.models import encode

DEFAULT_LIMIT = 20
MAX_LIMIT = 40


def page_limit(raw: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """The ``limit`` query parameter: absent gives the default, above the
    maximum is clamped to it, anything not a positive integer is a 422."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise Problem(
            422,
            "invalid_limit",
            "limit must be a positive integer.",
            errors=[{"field": "limit", "message": "a positive integer"}],
        )
    return min(value, maximum)


def encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(encode(list(key))).decode().rstrip("=")


def decode_cursor(raw: str | None, shape: Sequence[type]) -> list[Any] | None:
    """The sort key in ``raw`` (None for the first page), checked against ``shape``."""
    if raw is None or raw == "":
        return None
    try:
        decoded = msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError):
        decoded = None
    if (
        not isinstance(decoded, list)
        or len(decoded) != len(shape)
        or not all(isinstance(v, t) for v, t in zip(decoded, shape, strict=True))
    ):
        raise _foreign_cursor()
    return decoded


def _foreign_cursor() -> Problem:
    return Problem(
        422,
        "invalid_cursor",
        "The cursor is not one this API issued.",
        errors=[{"field": "cursor", "message": "use next_cursor from a previous page"}],
    )


def decode_id_cursor(raw: str | None) -> uuid.UUID | None:
    """A cursor holding the id of the last item seen (None for the first page);
    422 like any cursor this API did not issue."""
    decoded = decode_cursor(raw, [str])
    if decoded is None:
        return None
    after = parse_uuid(decoded[0])
    if after is None:
        raise _foreign_cursor()
    return after


def encode_id_cursor(item_id: object) -> str:
    return encode_cursor([str(item_id)])


def next_link(url: URL, cursor: str | None) -> dict[str, str]:
    """The ``Link: <…>; rel="next"`` header for the page after this one, as a
    reference relative to the request (RFC 8288), whatever host it came by."""
    if cursor is None:
        return {}
    following = url.include_query_params(cursor=cursor)
    return {"Link": f'<{following.path}?{following.query}>; rel="next"'}

"""Typed bodies: what clients send (:class:`Body`) and see (:class:`View`).

Each service declares its public bodies once, as msgspec Structs in its
``views`` module, and lists them in ``SCHEMAS``. The same types validate
what comes in (:func:`social_common.rest.decode_body`), shape what goes out
(:func:`encode`, which :func:`social_common.rest.json_response` uses), and
generate the OpenAPI document's schemas (``make openapi``). A rule the
decoding enforces is a ``Meta`` constraint; a rule a service checks itself,
with its own message, is documented with ``Meta(extra_json_schema=...)`` from
the same constant the service checks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

# A moment: an aware datetime, written RFC 3339 (with a "Z" for UTC, which is
# what PostgreSQL hands back: see social_common.db).
Moment = Annotated[datetime, msgspec.Meta(tz=True)]
# An id that is kept as text (from a peer or a cache), documented as the UUID it is.
UuidText = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]
Url = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uri"})]


class Body(msgspec.Struct, forbid_unknown_fields=True):
    """A request body: an unknown (or read-only) field is refused, never ignored."""


class View(msgspec.Struct):
    """A response body. A field that defaults to ``msgspec.UNSET`` is left out
    unless set (``liked_by_me`` only when a token was sent)."""


_encoder = msgspec.json.Encoder()


def encode(document: Any) -> bytes:
    """JSON of a view, or of plain data (dicts, lists, UUIDs, datetimes in RFC 3339)."""
    return _encoder.encode(document)

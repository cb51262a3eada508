"""Typed bodies: what clients send (:class:`Body`) and see (:class:`View`).

Each service declares its public bodies once, as msgspec Structs in its
``views`` module, and lists them in ``SCHEMAS``. The same types validate
what comes in (:func:`decode_body`), shape what goes out
(:func:`social_common.rest.json_response` encodes them), and generate the
OpenAPI document's schemas (``make openapi``). Field constraints are
``Annotated[..., Meta(...)]``: enforced on decoding, documented in the schema.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec

from social_common.errors import Problem

# A moment, written RFC 3339 in UTC with a "Z" (msgspec's encoding of an aware datetime).
Moment = Annotated[datetime, msgspec.Meta(tz=True)]
# An id that is kept as text (from a peer or a cache), documented as the UUID it is.
UuidText = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uuid"})]


class Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A request body: an unknown (or read-only) field is refused, never ignored."""


class View(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A response body. A field that defaults to ``msgspec.UNSET`` is left out
    unless set (``liked_by_me`` only when a token was sent)."""


B = TypeVar("B", bound=Body)

# msgspec's messages: "Expected `str`, got `int` - at `$.caption`",
# "Object missing required field `message`", "Object contains unknown field `x`".
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?:\.(?P<field>\w+))?[^`]*`)?$")
_NAMED = re.compile(r"field `(?P<field>\w+)`")


def decode_body(raw: bytes, kind: type[B]) -> B:
    """``raw`` as a ``kind``, or a problem: 400 for JSON that is not, 422 naming
    the offending field for anything else (NUL characters too: PostgreSQL
    text cannot hold them, and no field of ours has a use for them)."""
    try:
        body = msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc)) from None
    except msgspec.DecodeError:
        raise Problem(400, "invalid_json", "The body is not valid JSON.") from None
    for name in body.__struct_fields__:
        value = getattr(body, name)
        if isinstance(value, str) and "\x00" in value:
            raise _field_problem(name, "must not contain NUL characters")
    return body


def _invalid(text: str) -> Problem:
    match = _AT.match(text)
    assert match is not None  # the pattern matches any line
    field = match["field"]
    message = match["message"]
    if field is None:
        named = _NAMED.search(message)
        if named is None:
            return Problem(422, "validation_failed", "The body must be a JSON object.")
        field = named["field"]
        message = "required" if "missing" in message else "unknown or read-only field"
    return _field_problem(field, message)


def _field_problem(field: str, message: str) -> Problem:
    return Problem(
        422,
        "validation_failed",
        "The body has invalid fields.",
        errors=[{"field": field, "message": message}],
    )


_encoder = msgspec.json.Encoder()


def encode(document: Any) -> bytes:
    """JSON of a view, or of plain data (dicts, lists, UUIDs, datetimes in RFC 3339)."""
    return _encoder.encode(document)

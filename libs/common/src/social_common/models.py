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

# Free text as social_common.validation.clean_text takes it: trimmed of white
# space (str.strip(): these, and the control characters \t to \r, \x1c to
# \x1f and \x85), then without control characters (Unicode category Cc,
# U+0000-U+001F and U+007F-U+009F) but those it keeps. As JSON Schema
# patterns; tests/test_fuzz.py checks them against clean_text over all of Unicode.
_SPACE = "\\x20\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
_WHITE = f"[\\x09-\\x0d\\x1c-\\x1f\\x85{_SPACE}]"
# A character that stays once trimmed: no control character, no white space.
_SOLID = f"[^\\x00-\\x1f\\x7f-\\x9f{_SPACE}]"


def text_pattern(keep: str = "\n", blank: bool = True) -> str:
    """The JSON Schema ``pattern`` of the free text ``clean_text(..., keep=keep)``
    takes: white space at either end, and between, no control characters but
    those in ``keep``; unless ``blank``, something must remain once trimmed."""
    refused = [c for c in [*range(0x00, 0x20), *range(0x7F, 0xA0)] if chr(c) not in keep]
    controls = "".join(
        f"\\x{first:02x}" if first == last else f"\\x{first:02x}-\\x{last:02x}"
        for first, last in _runs(refused)
    )
    trimmed = f"{_SOLID}(?:[^{controls}]*{_SOLID})?"
    return f"^{_WHITE}*{trimmed if not blank else f'(?:{trimmed})?'}{_WHITE}*$"


def _runs(codes: list[int]) -> list[tuple[int, int]]:
    """Consecutive ``codes`` as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1] = (runs[-1][0], code)
        else:
            runs.append((code, code))
    return runs


class Body(msgspec.Struct, forbid_unknown_fields=True):
    """A request body: an unknown (or read-only) field is refused, never ignored."""


class View(msgspec.Struct):
    """A response body. A field that defaults to ``msgspec.UNSET`` is left out
    unless set (``liked_by_me`` only when a token was sent)."""


_encoder = msgspec.json.Encoder()


def encode(document: Any) -> bytes:
    """JSON of a view, or of plain data (dicts, lists, UUIDs, datetimes in RFC 3339)."""
    return _encoder.encode(document)

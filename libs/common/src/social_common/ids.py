"""UUIDv7 identifiers (RFC 9562): time-ordered, so new rows append to indexes.

Python gains ``uuid.uuid7`` only in 3.14; this is the same layout.
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    """48 bits of Unix milliseconds, version 7, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    value = (millis & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return uuid.UUID(int=value)


def parse_uuid(text: str) -> uuid.UUID | None:
    """The UUID in ``text``, or None when it is not one (never raises)."""
    try:
        return uuid.UUID(text)
    except (ValueError, TypeError, AttributeError):
        return None

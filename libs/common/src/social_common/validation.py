"""Checks of client text that every service shares, as problem+json errors."""

from __future__ import annotations

import unicodedata

from social_common.errors import Problem


def field_error(field: str, message: str, code: str = "validation_failed") -> Problem:
    """A 422 naming the one field that is wrong and why."""
    return Problem(422, code, f"{field}: {message}.", errors=[{"field": field, "message": message}])


def clean_text(field: str, value: str, maximum: int, keep: str = "\n") -> str:
    """Free text from a client: NFC, trimmed, at most ``maximum`` characters,
    no control characters but those in ``keep``."""
    value = unicodedata.normalize("NFC", value.strip())
    if len(value) > maximum:
        raise field_error(field, f"at most {maximum} characters")
    if any(unicodedata.category(c) == "Cc" and c not in keep for c in value):
        raise field_error(field, "control characters are not allowed")
    return value

"""What every service's views share: how a moment is written for clients."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``: ``2026-12-04T20:16:01.123456Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")

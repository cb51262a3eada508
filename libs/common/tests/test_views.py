"""Moments are written one way for clients: RFC 3339, UTC, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from social_common.views import timestamp


def test_utc_moments_end_in_z() -> None:
    assert timestamp(datetime(2026, 12, 4, 20, 16, 1, 123456, tzinfo=UTC)) == (
        "2026-12-04T20:16:01.123456Z"
    )


def test_other_zones_are_converted_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    assert timestamp(datetime(2026, 12, 4, 21, 16, 1, tzinfo=paris)) == "2026-12-04T20:16:01Z"


def test_the_text_reads_back_as_the_same_moment() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
    assert datetime.fromisoformat(timestamp(moment)) == moment

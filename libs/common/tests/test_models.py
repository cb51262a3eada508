"""Typed bodies: what decoding refuses (and how it says so), how views encode."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from msgspec import UNSET, UnsetType, field
from social_common.errors import Problem
from social_common.models import Body, Moment, View, encode
from social_common.rest import decode_body


class _Note(Body):
    text: str
    tags: list[str] = field(default_factory=list)
    pinned: bool | UnsetType = UNSET


class _Shown(View):
    id: uuid.UUID
    at: Moment
    liked: bool | UnsetType = UNSET


def _refusal(raw: bytes) -> Problem:
    with pytest.raises(Problem) as refused:
        decode_body(raw, _Note)
    return refused.value


def test_a_valid_body_decodes_to_its_type() -> None:
    note = decode_body(b'{"text": "hi", "pinned": true}', _Note)
    assert (note.text, note.tags, note.pinned) == ("hi", [], True)
    assert decode_body(b'{"text": "hi"}', _Note).pinned is UNSET


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        (b"{}", "text", "required"),
        (b'{"text": "hi", "admin": true}', "admin", "unknown or read-only field"),
        (b'{"text": "hi", "a-b c": 1}', "a-b c", "unknown or read-only field"),
        (b'{"text": 5}', "text", "must be a string"),
        (b'{"text": null}', "text", "must be a string"),
        (b'{"text": "hi", "tags": ["a", 1]}', "tags", "must be a string"),
        (b'{"text": "hi", "tags": "a"}', "tags", "must be a list"),
        (b'{"text": "a\\u0000b"}', "text", "must not contain NUL characters"),
    ],
)
def test_an_invalid_field_is_named(raw: bytes, field: str, message: str) -> None:
    problem = _refusal(raw)
    assert (problem.status, problem.code) == (422, "validation_failed")
    assert problem.errors == [{"field": field, "message": message}]


def test_every_unknown_and_missing_field_is_named_at_once() -> None:
    problem = _refusal(b'{"admin": true, "text2": "x", "pinned": "no"}')
    assert problem.errors == [
        {"field": "admin", "message": "unknown or read-only field"},
        {"field": "text2", "message": "unknown or read-only field"},
        {"field": "text", "message": "required"},
    ]


def test_json_that_is_not_an_object_or_not_json_is_refused() -> None:
    not_an_object = _refusal(b"[1]")
    assert (not_an_object.status, not_an_object.detail) == (422, "The body must be a JSON object.")
    for raw in (b'{"text": ', b"2x", b"[1] ]"):
        malformed = _refusal(raw)
        assert (malformed.status, malformed.code) == (400, "invalid_json"), raw


def test_views_encode_uuids_moments_in_utc_and_leave_unset_fields_out() -> None:
    post_id = uuid.UUID("01936f0e-0000-7000-8000-000000000001")
    paris = timezone(timedelta(hours=1))
    shown = _Shown(id=post_id, at=datetime(2026, 12, 4, 21, 16, 1, 5, tzinfo=paris))
    assert encode(shown) == (
        b'{"id":"01936f0e-0000-7000-8000-000000000001","at":"2026-12-04T21:16:01.000005+01:00"}'
    )
    utc = _Shown(id=post_id, at=datetime(2026, 12, 4, 20, 16, 1, tzinfo=UTC), liked=False)
    assert encode(utc).endswith(b'"at":"2026-12-04T20:16:01Z","liked":false}')

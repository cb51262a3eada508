"""UUIDv7 identifiers: the RFC 9562 layout, time-ordered; parse_uuid never raises."""

from __future__ import annotations

import time
import uuid

import pytest
from social_common.ids import parse_uuid, uuid7


def _next_millisecond() -> None:
    start = time.time_ns() // 1_000_000
    while time.time_ns() // 1_000_000 == start:
        pass


def test_the_layout_is_version_7_with_the_rfc_variant() -> None:
    for _ in range(200):
        value = uuid7()
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_the_first_48_bits_are_the_unix_milliseconds_of_its_making() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= value.int >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_after_as_uuids_bytes_and_text() -> None:
    made = []
    for _ in range(5):
        made.append(uuid7())
        _next_millisecond()
    assert sorted(made) == made
    assert sorted(made, key=lambda u: u.bytes) == made
    assert sorted(made, key=str) == made


def test_the_random_bits_differ() -> None:
    values = [uuid7() for _ in range(2000)]
    assert len(set(values)) == len(values)
    # Made within the same few milliseconds, they still differ in their random part.
    assert len({v.int & ((1 << 62) - 1) for v in values}) == len(values)


@pytest.mark.parametrize(
    "text",
    [
        "0190c3a1-7e5b-7c1d-9a2b-3c4d5e6f7a8b",
        "0190C3A1-7E5B-7C1D-9A2B-3C4D5E6F7A8B",
        "0190c3a17e5b7c1d9a2b3c4d5e6f7a8b",
        "{0190c3a1-7e5b-7c1d-9a2b-3c4d5e6f7a8b}",
        "urn:uuid:0190c3a1-7e5b-7c1d-9a2b-3c4d5e6f7a8b",
    ],
)
def test_parse_uuid_reads_the_forms_uuid_accepts(text: str) -> None:
    assert parse_uuid(text) == uuid.UUID("0190c3a1-7e5b-7c1d-9a2b-3c4d5e6f7a8b")


def test_parse_uuid_round_trips_a_new_id() -> None:
    value = uuid7()
    assert parse_uuid(str(value)) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "0190c3a1-7e5b-7c1d-9a2b-3c4d5e6f7a8",
        "0190c3a1-7e5b-7c1d-9a2b-3c4d5e6f7a8bz",
        "ü",
    ],
)
def test_parse_uuid_of_anything_else_is_none(text: str) -> None:
    assert parse_uuid(text) is None


@pytest.mark.parametrize("value", [None, 42, b"0190c3a17e5b7c1d9a2b3c4d5e6f7a8b", ["x"]])
def test_parse_uuid_of_a_value_that_is_no_text_is_none_not_an_error(value: object) -> None:
    # Values straight out of parsed JSON: any type may come.
    assert parse_uuid(value) is None  # type: ignore[arg-type]

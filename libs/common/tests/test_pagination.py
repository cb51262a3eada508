"""Cursor pagination: cursors round-trip, foreign ones are a 422 (never a 500),
limits are clamped, and the next page is linked relative to the request."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import msgspec
import pytest
from social_common.errors import Problem
from social_common.ids import uuid7
from social_common.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    decode_cursor,
    decode_id_cursor,
    encode_cursor,
    encode_id_cursor,
    next_link,
    page_limit,
)
from starlette.datastructures import URL, QueryParams


def _b64(value: Any) -> str:
    """A cursor as a client could forge one: any JSON, encoded as the API does."""
    return base64.urlsafe_b64encode(msgspec.json.encode(value)).decode().rstrip("=")


def _refused(raw: str, shape: tuple[type, ...] = (str, int)) -> Problem:
    with pytest.raises(Problem) as caught:
        decode_cursor(raw, shape)
    return caught.value


@pytest.mark.parametrize(
    "key",
    [
        ["2024-05-01T10:00:00+00:00", "0190c3a1-7e5b-7c1d-9a2b-3c4d5e6f7a8b"],
        ["é ünïcode ✓", 0],
        # Lengths that need 0, 1 and 2 padding characters once the "=" are stripped.
        ["a", 1],
        ["ab", 12],
        ["abc", 123],
    ],
)
def test_a_cursor_round_trips_to_its_sort_key(key: list[Any]) -> None:
    raw = encode_cursor(key)
    assert "=" not in raw
    # URL-safe: it goes into a query string as it is.
    assert set(raw) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_cursor(raw, [type(v) for v in key]) == key


def test_no_cursor_means_the_first_page() -> None:
    assert decode_cursor(None, [str]) is None
    assert decode_cursor("", [str]) is None
    assert decode_id_cursor(None) is None
    assert decode_id_cursor("") is None


@pytest.mark.parametrize(
    "raw",
    [
        "!!!!",  # not base64 at all
        "bm90IGpzb24",  # base64 of "not json"
        "é",  # not even ASCII
        _b64({"a": 1}),  # JSON, but not a list
        _b64(["only-one"]),  # a list of the wrong length
        _b64(["a", 1, 2]),
        _b64([1, "a"]),  # the right length, the wrong types
        _b64(["a", None]),
    ],
)
def test_a_cursor_the_api_did_not_issue_is_a_422_naming_the_field(raw: str) -> None:
    problem = _refused(raw)
    assert problem.status == 422
    assert problem.code == "invalid_cursor"
    assert [e["field"] for e in problem.errors] == ["cursor"]


def test_an_id_cursor_round_trips_to_the_uuid() -> None:
    item = uuid7()
    assert decode_id_cursor(encode_id_cursor(item)) == item
    # Whatever prints as the id will do, as services pass rows' ids through str().
    assert decode_id_cursor(encode_id_cursor(str(item))) == item


@pytest.mark.parametrize(
    "raw",
    [_b64(["not-a-uuid"]), _b64([str(uuid.uuid4()), "extra"]), _b64([42]), "%%%"],
)
def test_an_id_cursor_that_holds_no_uuid_is_a_422(raw: str) -> None:
    with pytest.raises(Problem) as caught:
        decode_id_cursor(raw)
    assert (caught.value.status, caught.value.code) == (422, "invalid_cursor")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, DEFAULT_LIMIT), ("", DEFAULT_LIMIT), ("1", 1), ("7", 7), (str(MAX_LIMIT), MAX_LIMIT)],
)
def test_a_limit_within_bounds_is_taken_as_given(raw: str | None, expected: int) -> None:
    assert page_limit(raw) == expected


def test_a_limit_above_the_maximum_is_clamped_not_refused() -> None:
    assert page_limit(str(MAX_LIMIT + 1)) == MAX_LIMIT
    assert page_limit("99999999999999999999999") == MAX_LIMIT
    assert page_limit("500", default=5, maximum=100) == 100
    assert page_limit(None, default=5, maximum=100) == 5


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "2.5", "1e3", "9" * 5000])
def test_a_limit_that_is_no_positive_integer_is_a_422(raw: str) -> None:
    with pytest.raises(Problem) as caught:
        page_limit(raw)
    problem = caught.value
    assert (problem.status, problem.code) == (422, "invalid_limit")
    assert [e["field"] for e in problem.errors] == ["limit"]


def test_next_link_keeps_the_other_parameters_and_replaces_the_cursor() -> None:
    url = URL("http://10.0.0.7:8080/api/v1/posts/feed?limit=5&cursor=old&tag=a+b")
    header = next_link(url, "NEXT_cursor-1")
    assert list(header) == ["Link"]
    target, rel = header["Link"].split("; ")
    assert rel == 'rel="next"'
    assert target.startswith("<")
    assert target.endswith(">")
    following = URL(target[1:-1])
    # Relative to the request: neither the host nor the port it came by.
    assert (following.scheme, following.netloc) == ("", "")
    assert following.path == "/api/v1/posts/feed"
    assert following.query.count("cursor=") == 1
    assert dict(QueryParams(following.query)) == {
        "limit": "5",
        "cursor": "NEXT_cursor-1",
        "tag": "a b",
    }


def test_next_link_of_a_request_without_a_query() -> None:
    header = next_link(URL("http://gateway/api/v1/users/ann/followers"), "abc")
    assert header == {"Link": '</api/v1/users/ann/followers?cursor=abc>; rel="next"'}


def test_the_last_page_has_no_link() -> None:
    assert next_link(URL("http://gateway/api/v1/posts?cursor=x"), None) == {}

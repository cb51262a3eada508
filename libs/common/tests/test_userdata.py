"""An account's data, paged section by section and written as one JSON object:
every item once, in order, empty sections named, whatever the page size."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence

import pytest
from social_common.errors import Problem
from social_common.userdata import (
    Section,
    UserData,
    first_page,
    local_source,
    sections_json,
)

USER = uuid.uuid4()


def _section(name: str, count: int) -> Section:
    keys = sorted(uuid.uuid4() for _ in range(count))

    async def read(
        user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> Sequence[tuple[uuid.UUID, bytes]]:
        assert user_id == USER
        found = [key for key in keys if after is None or key > after][:limit]
        return [(key, json.dumps({"id": str(key), "section": name}).encode()) for key in found]

    return Section(name, read)


def _archive(*parts: UserData, page_size: int = 500) -> dict[str, list[dict[str, str]]]:
    async def written() -> bytes:
        started = [await first_page(local_source(part, USER, page_size)) for part in parts]
        return b"{" + b"".join([chunk async for chunk in sections_json(started)])[1:] + b"}"

    document: dict[str, list[dict[str, str]]] = json.loads(asyncio.run(written()))
    return document


@pytest.mark.parametrize("page_size", [1, 2, 3, 5, 7, 500])
def test_every_item_is_written_once_in_order_and_empty_sections_too(page_size: int) -> None:
    counts = {"a": 3, "b": 0, "c": 5, "d": 0, "e": 1}
    first = UserData([_section(name, counts[name]) for name in "abc"])
    second = UserData([_section(name, counts[name]) for name in "de"])
    archive = _archive(first, second, page_size=page_size)
    assert list(archive) == list("abcde")
    for name, items in archive.items():
        assert len(items) == counts[name]
        assert all(item["section"] == name for item in items)
        assert [item["id"] for item in items] == sorted(item["id"] for item in items)


def test_pages_hold_at_most_their_size_and_resume_where_they_ended() -> None:
    data = UserData([_section("a", 4), _section("b", 2)])

    async def pages() -> list[list[str]]:
        seen, token = [], ""
        while True:
            page = await data.page(USER, token, 3)
            assert len(page.items) <= 3
            assert list(page.sections) == ["a", "b"]
            seen.append([item.section for item in page.items])
            token = page.next_page_token
            if not token:
                return seen

    assert asyncio.run(pages()) == [["a", "a", "a"], ["a", "b", "b"]]


@pytest.mark.parametrize("token", ["nonsense", "WzUsIiJd", "WzAsIngiXQ"])
def test_a_token_not_issued_is_refused(token: str) -> None:
    # WzUsIiJd is [5, ""] (no such section), WzAsIngiXQ [0, "x"] (not an id).
    data = UserData([_section("a", 1)])
    with pytest.raises(Problem) as refused:
        asyncio.run(data.page(USER, token, 10))
    assert refused.value.status == 422


def test_two_parts_exporting_one_section_is_a_bug_not_an_archive() -> None:
    with pytest.raises(RuntimeError, match="two sources"):
        _archive(UserData([_section("a", 1)]), UserData([_section("a", 0)]))

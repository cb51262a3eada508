"""A user's data, exported: each service that keeps some serves it over gRPC
(``UserDataService``) in pages, one section after another; auth reads every
one of them into the archive of ``GET /api/v1/users/profile/export``.

Which services keep a user's data is a fact of the roster: those that consume
``user.deleted`` (and erase it on that event). A section is a list of JSON
objects in the order of a key (an id); a page ends at any item, and its token
says which section and key come next, so no page holds more than its size.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from social.userdata.v1 import userdata_pb2, userdata_pb2_grpc

from social_common.errors import Problem
from social_common.ids import parse_uuid
from social_common.models import encode
from social_common.pagination import decode_cursor, encode_cursor
from social_common.peers import PEER_TIMEOUT
from social_common.runner import Servicer

Row = TypeVar("Row")

PAGE_SIZE = 500
MAX_PAGE = 1000

# A section's page: the user's items after the key ``after`` (from the first
# when None), at most ``limit`` of them, as (key, JSON object) in key order.
PageReader = Callable[
    [uuid.UUID, uuid.UUID | None, int], Awaitable[Sequence[tuple[uuid.UUID, bytes]]]
]

# A key before every id (all are UUIDv7 or v4, greater than the nil UUID).
BEFORE_ALL = uuid.UUID(int=0)


@dataclass(frozen=True)
class Section:
    name: str
    read: PageReader


class UserData:
    """A service's sections of a user's data, read a page at a time."""

    def __init__(self, sections: Sequence[Section]) -> None:
        self.sections = sections

    async def page(
        self, user_id: uuid.UUID, token: str, size: int
    ) -> userdata_pb2.ExportUserDataResponse:
        """The page at ``token`` (empty: the first): 422 for a token not ours."""
        index, after = 0, None
        cursor = decode_cursor(token, [int, str])
        if cursor is not None:
            index, key = cursor
            after = parse_uuid(key) if key else None
            if not 0 <= index < len(self.sections) or (key and after is None):
                raise Problem(
                    422, "invalid_cursor", "The page token is not one this service issued."
                )
        reply = userdata_pb2.ExportUserDataResponse(sections=[s.name for s in self.sections])
        while index < len(self.sections):
            room = size - len(reply.items)
            if room == 0:
                reply.next_page_token = encode_cursor([index, str(after or "")])
                break
            section = self.sections[index]
            # One more than there is room for tells whether the section goes on.
            found = await section.read(user_id, after, room + 1)
            reply.items.extend(
                userdata_pb2.UserDataItem(section=section.name, json=item)
                for _, item in found[:room]
            )
            if len(found) > room:
                reply.next_page_token = encode_cursor([index, str(found[room - 1][0])])
                break
            index, after = index + 1, None
        return reply


Context = grpc.aio.ServicerContext[Any, Any]


class UserDataRpc(userdata_pb2_grpc.UserDataServiceServicer):
    def __init__(self, data: UserData) -> None:
        self.data = data

    async def ExportUserData(
        self, request: userdata_pb2.ExportUserDataRequest, context: Context
    ) -> userdata_pb2.ExportUserDataResponse:
        user_id = parse_uuid(request.user_id)
        if user_id is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id must be a UUID")
        try:
            return await self.data.page(
                user_id, request.page_token, max(1, min(request.page_size or PAGE_SIZE, MAX_PAGE))
            )
        except Problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token is not ours")


def query_section(
    name: str,
    db: AsyncConnectionPool,
    fetch: Callable[[AsyncConnection[Any], uuid.UUID, uuid.UUID, int], Awaitable[Sequence[Row]]],
    shown: Callable[[Row], tuple[uuid.UUID, Any]],
) -> Section:
    """A section read from a service's PostgreSQL: ``fetch(conn, user_id,
    after, limit)`` gives the rows with keys past ``after`` in key order
    (``after`` is BEFORE_ALL on the first page, so the query is one plain
    range, the same plan every page), ``shown(row)`` a row's key and the
    view the archive holds of it."""

    async def read(
        user_id: uuid.UUID, after: uuid.UUID | None, limit: int
    ) -> Sequence[tuple[uuid.UUID, bytes]]:
        async with db.connection() as conn:
            rows = await fetch(conn, user_id, after or BEFORE_ALL, limit)
        return [(key, encode(view)) for key, view in map(shown, rows)]

    return Section(name, read)


def servicer(data: UserData) -> Servicer:
    """The gRPC service of a service's part of an account's export."""
    return Servicer(
        UserDataRpc(data),
        userdata_pb2_grpc.add_UserDataServiceServicer_to_server,
        userdata_pb2.DESCRIPTOR.services_by_name["UserDataService"],
    )


# Reads the page at a token: a service's own UserData, or a peer's over gRPC.
PageSource = Callable[[str], Awaitable[userdata_pb2.ExportUserDataResponse]]


def local_source(data: UserData, user_id: uuid.UUID, page_size: int = PAGE_SIZE) -> PageSource:
    async def read(token: str) -> userdata_pb2.ExportUserDataResponse:
        return await data.page(user_id, token, page_size)

    return read


def peer_source(channel: grpc.aio.Channel, user_id: uuid.UUID) -> PageSource:
    stub = userdata_pb2_grpc.UserDataServiceStub(channel)

    async def read(token: str) -> userdata_pb2.ExportUserDataResponse:
        request = userdata_pb2.ExportUserDataRequest(
            user_id=str(user_id), page_size=PAGE_SIZE, page_token=token
        )
        reply: userdata_pb2.ExportUserDataResponse = await stub.ExportUserData(
            request, timeout=PEER_TIMEOUT
        )
        return reply

    return read


async def first_page(
    source: PageSource,
) -> tuple[PageSource, userdata_pb2.ExportUserDataResponse]:
    """A source with its first page, as sections_json takes them."""
    return source, await source("")


async def sections_json(
    started: Sequence[tuple[PageSource, userdata_pb2.ExportUserDataResponse]],
) -> AsyncIterator[bytes]:
    """The sources' sections as the members of a JSON object (``"posts":[…],
    "likes":[…]``, each preceded by a comma), every source read to its end
    from its first page on. Empty sections are written too; a section name
    two sources both use is a bug of the fleet (RuntimeError)."""
    written: set[str] = set()

    def opened(name: str) -> bytes:
        if name in written:
            raise RuntimeError(f"two sources export the section {name!r}")
        written.add(name)
        return b',"' + name.encode() + b'":['

    for source, page in started:
        declared = list(page.sections)
        position = -1  # in declared, of the section open
        count = 0  # its items written so far
        while True:
            chunk: list[bytes] = []  # a page's worth: one write, not one per item
            for item in page.items:
                if position < 0 or item.section != declared[position]:
                    if item.section not in declared[position + 1 :]:
                        raise RuntimeError(f"an item of the section {item.section!r} out of order")
                    target = declared.index(item.section, position + 1)
                    if position >= 0:
                        chunk.append(b"]")
                    chunk.extend(opened(name) + b"]" for name in declared[position + 1 : target])
                    chunk.append(opened(item.section))
                    position, count = target, 0
                chunk.append((b"," if count else b"") + item.json)
                count += 1
            if not page.next_page_token:
                break
            yield b"".join(chunk)
            page = await source(page.next_page_token)
        if position >= 0:
            chunk.append(b"]")
        chunk.extend(opened(name) + b"]" for name in declared[position + 1 :])
        yield b"".join(chunk)

"""The feeds: posts by id, the global feed and each author's posts (pages
cached in L1, see posts.cache), and home timelines (Redis, rebuilt from auth
and Postgres when missing); each with its authors and, for a reader with a
token, what they like.

Redis holds copies only: while it is away (restarting, failing over), home
timelines and what a reader likes are read from auth and Postgres instead,
as the caches' misses are, so reads go on answering, slower."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import grpc
from psycopg_pool import AsyncConnectionPool
from social.auth.v1 import auth_pb2_grpc
from social_common.authors import AuthorDirectory
from social_common.cache import Entry
from social_common.ids import parse_uuid
from social_common.logging import get_logger
from social_common.pagination import encode_id_cursor
from social_common.peers import follow_pages
from social_common.redis import UNAVAILABLE as REDIS_UNAVAILABLE

from posts import store, views
from posts.cache import GLOBAL, PostCache, author_list
from posts.likes import LikedAnswer, LikedSets
from posts.service import not_found
from posts.settings import PostsSettings
from posts.timelines import Timelines

log = get_logger(__name__)


class PostFeeds:
    def __init__(
        self,
        db: AsyncConnectionPool,
        cache: PostCache,
        timelines: Timelines,
        likes: LikedSets,
        auth: grpc.aio.Channel,
        authors: AuthorDirectory,
        settings: PostsSettings,
    ) -> None:
        self.db = db
        self.cache = cache
        self.timelines = timelines
        self.likes = likes
        self.auth = auth_pb2_grpc.AuthServiceStub(auth)
        self.authors = authors
        self.settings = settings

    # -- posts by id -----------------------------------------------------------

    async def documents(self, ids: Sequence[str]) -> dict[str, views.PostDocument]:
        """The cached documents of the posts among ``ids`` (the text of their
        ids: the cache's keys, as timelines and feed pages hold them) that exist."""
        return await self.cache.documents.get_many(ids, self._load_documents)

    async def _load_documents(self, ids: Sequence[str]) -> Mapping[str, Entry]:
        # The cache hands back the keys it missed: parsed here, for Postgres.
        parsed = [u for u in (parse_uuid(i) for i in ids) if u is not None]
        async with self.db.connection() as conn:
            rows = await store.posts_by_ids(conn, parsed)
        # Absent ones are cached as absent (version 0): a creation outranks it.
        found: dict[str, Entry] = {i: (0, None) for i in ids}
        for row in rows:
            document = views.post_document(row)
            found[document.id] = (row.version, document)
        return found

    async def get(self, post_id: uuid.UUID, viewer: uuid.UUID | None) -> views.Post:
        found = await self.documents([str(post_id)])
        rendered = await self._render(list(found.values()), viewer)
        if not rendered:
            raise not_found()
        return rendered[0]

    async def _render(
        self,
        documents: Sequence[views.PostDocument],
        viewer: uuid.UUID | None,
        liked_answer: LikedAnswer | None = None,
    ) -> list[views.Post]:
        """Posts as clients see them (``liked_answer``: what Redis said
        already of what the viewer likes)."""
        if not documents:
            return []
        authors = await self.authors.authors(d.author_id for d in documents)
        liked: set[str] | None = None
        if viewer is not None:
            liked = await self._liked(viewer, [d.id for d in documents], liked_answer)
        return views.render(documents, authors, liked)

    async def _page(
        self,
        ids: Sequence[str],
        next_cursor: str | None,
        viewer: uuid.UUID | None,
        liked_answer: LikedAnswer | None = None,
    ) -> views.PostPage:
        found = await self.documents(ids)
        # Posts deleted since the ids were listed are left out.
        posts = await self._render([found[i] for i in ids if i in found], viewer, liked_answer)
        return views.PostPage(posts, next_cursor)

    # -- what the viewer likes -------------------------------------------------

    async def _liked(
        self, viewer: uuid.UUID, ids: Sequence[str], answer: LikedAnswer | None = None
    ) -> set[str]:
        """Which of ``ids`` the viewer likes (``answer``: what Redis said already)."""
        try:
            return await self._liked_from_redis(viewer, ids, answer)
        except REDIS_UNAVAILABLE as exc:
            log.warning("liked_sets_unavailable", error=str(exc))
            async with self.db.connection() as conn:
                found = await store.liked(conn, viewer, [uuid.UUID(i) for i in ids])
            return {str(i) for i in found}

    async def _liked_from_redis(
        self, viewer: uuid.UUID, ids: Sequence[str], answer: LikedAnswer | None
    ) -> set[str]:
        user_id = str(viewer)
        if answer is None:
            answer = await self.likes.lookup(user_id, ids)
        if not answer.ready:

            async def recent_likes(_user_id: str, limit: int) -> tuple[list[str], bool]:
                async with self.db.connection() as conn:
                    found, more = await store.recent_likes(conn, viewer, limit)
                return [str(i) for i in found], more

            await self.likes.load(user_id, recent_likes)
            answer = await self.likes.lookup(user_id, ids)
            if not answer.ready:  # an unlike dropped it while it loaded: ask Postgres
                answer = LikedAnswer(ready=True, liked=set(), unsure=list(ids))
        if not answer.unsure:
            return answer.liked
        async with self.db.connection() as conn:
            older = await store.liked(conn, viewer, [uuid.UUID(i) for i in answer.unsure])
        return answer.liked | {str(i) for i in older}

    # -- the global feed and each author's posts -------------------------------

    async def list_page(
        self,
        author_id: uuid.UUID | None,
        before: uuid.UUID | None,
        limit: int,
        viewer: uuid.UUID | None,
    ) -> views.PostPage:
        """A page of the global feed (no author) or of one author's posts."""
        name = GLOBAL if author_id is None else author_list(author_id)
        cached = self.cache.pages.get(name, before, limit)
        if cached is None:
            generation = self.cache.pages.generation(name)
            async with self.db.connection() as conn:
                found = await store.page_ids(
                    conn,
                    authors=None if author_id is None else [author_id],
                    before=before,
                    limit=limit + 1,
                )
            # Kept as the documents' keys: a page read again costs no conversion.
            ids = [str(i) for i in found[:limit]]
            cached = (ids, encode_id_cursor(ids[-1]) if len(found) > limit else None)
            self.cache.pages.put(name, before, limit, generation, cached)
        return await self._page(cached[0], cached[1], viewer)

    # -- home timelines ----------------------------------------------------------

    async def home_page(
        self, viewer: uuid.UUID, before: uuid.UUID | None, limit: int
    ) -> views.PostPage:
        """The viewer's home timeline: their posts and those of whom they follow."""
        try:
            return await self._home_from_timeline(viewer, before, limit)
        except REDIS_UNAVAILABLE as exc:
            log.warning("timeline_unavailable", error=str(exc))
        async with self.db.connection() as conn:
            found = await store.page_ids(
                conn,
                authors=[viewer, *await self._followees(viewer)],
                before=before,
                limit=limit + 1,
            )
        ids = [str(i) for i in found]
        next_cursor = encode_id_cursor(ids[limit - 1]) if len(ids) > limit else None
        return await self._page(ids[:limit], next_cursor, viewer)

    async def _home_from_timeline(
        self, viewer: uuid.UUID, before: uuid.UUID | None, limit: int
    ) -> views.PostPage:
        user_id = str(viewer)
        start = None if before is None else str(before)
        page = await self.timelines.page(user_id, start, limit + 1, self.likes)
        rebuilt_from: list[uuid.UUID] | None = None
        if not page.ready:
            rebuilt_from = await self._rebuild(viewer)
            page = await self.timelines.page(user_id, start, limit + 1, self.likes)
        ids = page.ids
        # Authors with very many followers are merged in here, not fanned out;
        # past the newest ids the timeline keeps, Postgres answers, as it does
        # when a follow or unfollow forgot the timeline while it was rebuilt.
        extra_authors: list[uuid.UUID]
        if not page.ready and rebuilt_from is not None:
            extra_authors = [viewer, *rebuilt_from]
        elif page.truncated and len(ids) <= limit:
            followees = await self.timelines.followees(user_id)
            extra_authors = [viewer, *(uuid.UUID(u) for u in followees)]
        else:
            extra_authors = [uuid.UUID(c) for c in page.celebrities]
        if extra_authors:
            async with self.db.connection() as conn:
                older = await store.page_ids(
                    conn, authors=extra_authors, before=before, limit=limit + 1
                )
            ids = sorted(set(ids) | {str(i) for i in older}, reverse=True)[: limit + 1]
        next_cursor = encode_id_cursor(ids[limit - 1]) if len(ids) > limit else None
        shown = ids[:limit]
        # What the reader likes came with the page, unless other ids were merged in.
        liked_answer = (
            None if extra_authors else LikedSets.read(page.liked[: 2 + len(shown)], shown)
        )
        return await self._page(shown, next_cursor, viewer, liked_answer)

    async def _rebuild(self, viewer: uuid.UUID) -> list[uuid.UUID]:
        """Rebuilds a home timeline from auth (whom the user follows) and
        Postgres (their newest posts); returns the followees."""
        user_id = str(viewer)
        await self.timelines.start_rebuild(user_id)
        followee_ids = await self._followees(viewer)
        size = self.settings.timeline_size
        async with self.db.connection() as conn:
            recent = await store.page_ids(
                conn, authors=[*followee_ids, viewer], before=None, limit=size + 1
            )
        await self.timelines.finish_rebuild(
            user_id,
            [str(u) for u in followee_ids],
            [str(i) for i in recent[:size]],
            more=len(recent) > size,
        )
        return followee_ids

    async def _followees(self, viewer: uuid.UUID) -> list[uuid.UUID]:
        """Whom the viewer follows, from auth."""
        return [
            uuid.UUID(u)
            async for page in follow_pages(
                self.auth, "following", str(viewer), self.settings.fanout_page
            )
            for u in page
        ]

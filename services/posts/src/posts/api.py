"""The posts service's REST API (reached through the gateway)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence

from msgspec import UNSET
from social_common.errors import Problem
from social_common.idempotency import Idempotency
from social_common.ids import parse_uuid
from social_common.models import encode
from social_common.pagination import decode_id_cursor, next_link, page_limit
from social_common.ratelimit import Limit, RateLimiter, raise_if_limited
from social_common.response_cache import ResponseCache
from social_common.rest import (
    conditional_json,
    decode_body,
    etag_of,
    json_response,
    path_uuid,
    read_json_body,
)
from social_common.tokens import TokenVerifier, authenticate, authenticate_optional
from social_common.validation import clean_text, field_error
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from posts import views
from posts.cache import PostCache
from posts.feeds import PostFeeds
from posts.service import MAX_CAPTION, MAX_MEDIA, not_found
from posts.settings import PostsSettings
from posts.writes import PostWrites

# Anonymous renderings kept, each valid for one generation of changes.
RENDERED_ENTRIES = 2_000


def _cursor(request: Request) -> uuid.UUID | None:
    return decode_id_cursor(request.query_params.get("cursor"))


class PostsApi:
    def __init__(
        self,
        writes: PostWrites,
        feeds: PostFeeds,
        cache: PostCache,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        idempotency: Idempotency,
        settings: PostsSettings,
    ) -> None:
        self.writes = writes
        self.feeds = feeds
        self.cache = cache
        self.verifier = verifier
        self.limiter = limiter
        self.idempotency = idempotency
        self.settings = settings
        # What anonymous readers were sent, answered again while nothing changed.
        self.rendered = ResponseCache(
            "posts_pages", lambda: cache.generation, settings.local_cache_ms, RENDERED_ENTRIES
        )

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/v1/posts", self.global_feed, methods=["GET"]),
            Route("/api/v1/posts", self.create, methods=["POST"]),
            Route("/api/v1/posts/{post_id}", self.one, methods=["GET", "DELETE"]),
            Route("/api/v1/posts/{post_id}/like", self.like, methods=["POST", "DELETE"]),
            Route("/api/v1/users/{username}/posts", self.user_feed, methods=["GET"]),
            Route("/api/v1/feed", self.home_feed, methods=["GET"]),
        ]

    async def _user(self, request: Request) -> uuid.UUID:
        return (await authenticate(request, self.verifier)).user_id

    async def _viewer(self, request: Request) -> uuid.UUID | None:
        claims = await authenticate_optional(request, self.verifier)
        return None if claims is None else claims.user_id

    # -- writing -------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        author = await self._user(request)
        raw = await read_json_body(request)

        async def handle() -> Response:
            body = decode_body(raw, views.NewPost)
            caption = clean_text("caption", body.caption, MAX_CAPTION)
            media_ids, image_url = _media_choice(body)
            result = await self.limiter.hit(
                Limit("posts_create", str(author), self.settings.create_rate)
            )
            raise_if_limited(result)
            post = await self.writes.create(author, caption, media_ids, image_url)
            return json_response(
                post,
                201,
                headers={"Location": f"/api/v1/posts/{post.id}", **result.headers()},
            )

        return await self.idempotency.run(request, str(author), raw, handle)

    async def one(self, request: Request) -> Response:
        post_id = path_uuid(request, "post_id", not_found())
        if request.method == "DELETE":
            await self.writes.delete(post_id, await self._user(request))
            return Response(status_code=204)
        return await self._read(
            request, lambda viewer: self._single(post_id, viewer), paginated=False
        )

    async def like(self, request: Request) -> Response:
        user = await self._user(request)
        post_id = path_uuid(request, "post_id", not_found())
        result = await self.limiter.hit(Limit("posts_like", str(user), self.settings.like_rate))
        raise_if_limited(result)
        post = await self.writes.like(post_id, user, on=request.method == "POST")
        return json_response(post, headers=result.headers())

    # -- reading -------------------------------------------------------------

    async def global_feed(self, request: Request) -> Response:
        limit, before = page_limit(request.query_params.get("limit")), _cursor(request)
        return await self._read(
            request,
            lambda viewer: self.feeds.list_page(None, before, limit, viewer),
            # The first page as a newcomer sees it, without a query: the one
            # copy the gateway keeps (the roster's cached paths).
            shared_seconds=0 if request.url.query else self.settings.gateway_cache_seconds,
        )

    async def user_feed(self, request: Request) -> Response:
        limit, before = page_limit(request.query_params.get("limit")), _cursor(request)
        author = await self.feeds.authors.by_username(request.path_params["username"])
        if author is None:
            raise Problem(404, "user_not_found", "No such user.")
        author_id = uuid.UUID(author.id)  # the profile holds it as auth sent it: text
        return await self._read(
            request, lambda viewer: self.feeds.list_page(author_id, before, limit, viewer)
        )

    async def home_feed(self, request: Request) -> Response:
        viewer = await self._user(request)
        limit, before = page_limit(request.query_params.get("limit")), _cursor(request)
        page = await self.feeds.home_page(viewer, before, limit)
        return self._page_response(request, page)

    async def _single(self, post_id: uuid.UUID, viewer: uuid.UUID | None) -> views.PostPage:
        return views.PostPage([await self.feeds.get(post_id, viewer)], None)

    async def _read(
        self,
        request: Request,
        read: Callable[[uuid.UUID | None], Awaitable[views.PostPage]],
        *,
        paginated: bool = True,
        shared_seconds: int = 0,
    ) -> Response:
        """Answers a read by ``read(viewer)``; what an anonymous reader got is
        kept for the next (see social_common.response_cache), and by shared
        caches for ``shared_seconds``."""
        viewer = await self._viewer(request)
        generation = self.cache.generation
        page = await read(viewer)
        shared = shared_seconds if viewer is None else 0  # a reader's own page: never shared
        response = self._page_response(request, page, paginated, shared)
        if viewer is None:
            self.rendered.keep(request, response, generation)
        return response

    def _page_response(
        self,
        request: Request,
        page: views.PostPage,
        paginated: bool = True,
        shared_seconds: int = 0,
    ) -> Response:
        if paginated:
            body = encode(page)
            headers = next_link(request.url, page.next_cursor)
        else:
            body, headers = encode(page.items[0]), {}
        return conditional_json(
            request, body, etag_of(body), headers, shared_seconds=shared_seconds
        )


def _media_choice(body: views.NewPost) -> tuple[list[uuid.UUID], str | None]:
    """The media of a new post: ``media_ids`` (1 to 4 of the author's uploads),
    or the seed's ``image_url`` (the URL of one of them)."""
    if (body.media_ids is UNSET) == (body.image_url is UNSET):
        raise field_error("media_ids", "give media_ids or the seed's image_url: one of the two")
    if not isinstance(body.media_ids, list):
        assert isinstance(body.image_url, str)
        return [], body.image_url
    ids = [parse_uuid(i) for i in body.media_ids]
    if not 1 <= len(ids) <= MAX_MEDIA:
        raise field_error("media_ids", f"between 1 and {MAX_MEDIA} media ids")
    if None in ids:
        raise field_error("media_ids", "each must be a media id")
    if len(set(ids)) != len(ids):
        raise field_error("media_ids", "each media may appear once")
    return [i for i in ids if i is not None], None

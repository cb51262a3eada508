"""The messages service's REST API (reached through the gateway)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from social_common.errors import Problem
from social_common.idempotency import Idempotency
from social_common.models import encode
from social_common.pagination import decode_id_cursor, next_link, page_limit
from social_common.ratelimit import Limit, RateLimiter, raise_if_limited
from social_common.rest import (
    conditional_json,
    decode_body,
    etag_of,
    json_response,
    path_uuid,
    read_json_body,
)
from social_common.tokens import TokenVerifier, authenticate
from social_common.validation import field_error
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from messages import views
from messages.service import MessagesService, message_text, post_not_found
from messages.settings import MessagesSettings


class MessagesApi:
    def __init__(
        self,
        service: MessagesService,
        verifier: TokenVerifier,
        limiter: RateLimiter,
        idempotency: Idempotency,
        settings: MessagesSettings,
    ) -> None:
        self.service = service
        self.verifier = verifier
        self.limiter = limiter
        self.idempotency = idempotency
        self.settings = settings

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/api/v1/posts/{post_id}/messages", self.list, methods=["GET"]),
            Route("/api/v1/posts/{post_id}/messages", self.send, methods=["POST"]),
            Route("/api/v1/posts/{post_id}/messages/{message_id}", self.delete, methods=["DELETE"]),
        ]

    async def _user(self, request: Request) -> uuid.UUID:
        return (await authenticate(request, self.verifier)).user_id

    async def send(self, request: Request) -> Response:
        sender = await self._user(request)
        post_id = path_uuid(request, "post_id", post_not_found())
        raw = await read_json_body(request)

        async def handle() -> Response:
            text = message_text(decode_body(raw, views.NewMessage).message)
            result = await self.limiter.hit(
                Limit("messages_send", str(sender), self.settings.send_rate)
            )
            raise_if_limited(result)
            message = await self.service.send(post_id, sender, text)
            authors = await self.service.authors_of([message])
            return json_response(views.message(message, authors), 201, headers=result.headers())

        return await self.idempotency.run(request, str(sender), raw, handle)

    async def list(self, request: Request) -> Response:
        post_id = path_uuid(request, "post_id", post_not_found())
        limit = page_limit(request.query_params.get("limit"))
        order = request.query_params.get("order", "asc")
        if order not in ("asc", "desc"):
            raise field_error("order", "asc (oldest first) or desc (newest first)")
        after = decode_id_cursor(request.query_params.get("cursor"))
        messages, next_cursor = await self.service.page(
            post_id, after, limit, newest_first=order == "desc"
        )
        authors = await self.service.authors_of(messages)
        body = encode(views.page(messages, authors, next_cursor))
        return conditional_json(request, body, etag_of(body), next_link(request.url, next_cursor))

    async def delete(self, request: Request) -> Response:
        user = await self._user(request)
        post_id = path_uuid(request, "post_id", post_not_found())
        missing = Problem(404, "message_not_found", "No such message.")
        await self.service.delete(post_id, path_uuid(request, "message_id", missing), user)
        return Response(status_code=204)

"""The messages service's gRPC API for its peers."""

from __future__ import annotations

from typing import Any

import grpc
from social.messages.v1 import messages_pb2, messages_pb2_grpc
from social_common.errors import Problem
from social_common.ids import parse_uuid
from social_common.pagination import decode_id_cursor, encode_id_cursor

from messages.service import MessagesService

MAX_BATCH = 1000
DEFAULT_PAGE = 100
MAX_PAGE = 1000

Context = grpc.aio.ServicerContext[Any, Any]


class MessagesRpc(messages_pb2_grpc.MessagesServiceServicer):
    def __init__(self, service: MessagesService) -> None:
        self.service = service

    async def CountMessages(
        self, request: messages_pb2.CountMessagesRequest, context: Context
    ) -> messages_pb2.CountMessagesResponse:
        if len(request.post_ids) > MAX_BATCH:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_BATCH} ids")
        ids = {raw: parsed for raw in request.post_ids if (parsed := parse_uuid(raw))}
        counts = await self.service.counts(list(set(ids.values()))) if ids else {}
        return messages_pb2.CountMessagesResponse(
            counts={raw: counts.get(post_id, 0) for raw, post_id in ids.items()}
        )

    async def GetMessages(
        self, request: messages_pb2.GetMessagesRequest, context: Context
    ) -> messages_pb2.GetMessagesResponse:
        post_id = parse_uuid(request.post_id)
        try:
            after = decode_id_cursor(request.page_token)
        except Problem:
            post_id = None
        if post_id is None:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "post_id must be a UUID, page_token ours"
            )
        assert post_id is not None
        size = max(1, min(request.page_size or DEFAULT_PAGE, MAX_PAGE))
        found = await self.service.rpc_page(post_id, after, size + 1)
        reply = messages_pb2.GetMessagesResponse(
            next_page_token=encode_id_cursor(found[size - 1].id) if len(found) > size else ""
        )
        for message in found[:size]:
            item = messages_pb2.Message(
                id=str(message.id),
                post_id=str(message.post_id),
                sender_id=str(message.sender_id),
                text=message.body,
            )
            item.created_at.FromDatetime(message.created_at)
            reply.messages.append(item)
        return reply

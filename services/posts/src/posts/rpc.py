"""The posts service's gRPC API for its peers."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from social.posts.v1 import posts_pb2, posts_pb2_grpc
from social_common.ids import parse_uuid

from posts.feeds import PostFeeds

MAX_BATCH = 1000

Context = grpc.aio.ServicerContext[Any, Any]


class PostsRpc(posts_pb2_grpc.PostsServiceServicer):
    def __init__(self, feeds: PostFeeds) -> None:
        self.feeds = feeds

    async def GetPosts(
        self, request: posts_pb2.GetPostsRequest, context: Context
    ) -> posts_pb2.GetPostsResponse:
        if len(request.ids) > MAX_BATCH:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_BATCH} ids")
        # Each id once, in its canonical text (the cache's key); what is no
        # UUID names no post.
        ids = dict.fromkeys(i for i in (parse_uuid(text) for text in request.ids) if i is not None)
        found = await self.feeds.documents([str(i) for i in ids])
        reply = posts_pb2.GetPostsResponse()
        for doc in found.values():
            created_at = Timestamp()
            created_at.FromDatetime(doc.created_at)
            reply.posts.append(
                posts_pb2.Post(
                    id=doc.id,
                    author_id=doc.author_id,
                    visibility=posts_pb2.VISIBILITY_PUBLIC,
                    created_at=created_at,
                )
            )
        return reply

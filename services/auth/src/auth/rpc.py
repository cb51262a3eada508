"""The auth service's gRPC API for its peers."""

from __future__ import annotations

from typing import Any

import grpc
from social.auth.v1 import auth_pb2, auth_pb2_grpc
from social_common.errors import Problem
from social_common.ids import parse_uuid
from social_common.models import encode

from auth.keys import KeyRing
from auth.service import AuthService

MAX_BATCH = 1000
DEFAULT_PAGE = 1000
MAX_PAGE = 5000

Context = grpc.aio.ServicerContext[Any, Any]


class AuthRpc(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, service: AuthService, keys: KeyRing) -> None:
        self.service = service
        self.keys = keys

    async def GetUsers(
        self, request: auth_pb2.GetUsersRequest, context: Context
    ) -> auth_pb2.GetUsersResponse:
        if len(request.ids) + len(request.usernames) > MAX_BATCH:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_BATCH} ids and usernames"
            )
        ids = [i for i in (parse_uuid(raw) for raw in request.ids) if i is not None]
        users = await self.service.users(ids, request.usernames)
        return auth_pb2.GetUsersResponse(
            users=[
                auth_pb2.User(
                    id=str(u.id),
                    username=u.username,
                    display_name=u.display_name,
                    follower_count=u.follower_count,
                )
                for u in users
            ]
        )

    async def GetFollowers(
        self, request: auth_pb2.GetFollowersRequest, context: Context
    ) -> auth_pb2.GetFollowersResponse:
        ids, token = await self._page("followers", request, context)
        return auth_pb2.GetFollowersResponse(user_ids=ids, next_page_token=token)

    async def GetFollowing(
        self, request: auth_pb2.GetFollowingRequest, context: Context
    ) -> auth_pb2.GetFollowingResponse:
        ids, token = await self._page("following", request, context)
        return auth_pb2.GetFollowingResponse(user_ids=ids, next_page_token=token)

    async def _page(
        self,
        direction: str,
        request: auth_pb2.GetFollowersRequest | auth_pb2.GetFollowingRequest,
        context: Context,
    ) -> tuple[list[str], str]:
        user_id = parse_uuid(request.user_id)
        if user_id is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_id is not a UUID")
        assert user_id is not None
        size = max(1, min(request.page_size or DEFAULT_PAGE, MAX_PAGE))
        try:
            page, token = await self.service.follow_page(
                direction, user_id, request.page_token, size
            )
        except Problem as problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem.detail or problem.code)
            raise
        return [str(e.id) for e in page], token or ""

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: Context
    ) -> auth_pb2.GetJwksResponse:
        return auth_pb2.GetJwksResponse(jwks_json=encode(await self.keys.jwks()).decode())

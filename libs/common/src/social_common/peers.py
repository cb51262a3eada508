"""Clients of peer services over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator, Container, Mapping
from typing import Any, Literal

import grpc
import msgspec
from social.auth.v1 import auth_pb2, auth_pb2_grpc
from social.posts.v1 import posts_pb2, posts_pb2_grpc

from social_common.settings import Settings
from social_common.tokens import JwksSource, TokenVerifier

# How long one call to a peer may take.
PEER_TIMEOUT = 5.0


def channel(target: str) -> grpc.aio.Channel:
    """A channel to a peer; it connects on first use and reconnects by itself.
    A target that resolves to many addresses (``dns:///<peer>-headless…``, every
    pod of the peer) has its calls spread over all of them."""
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.enable_retries", 1),
            ("grpc.lb_policy_name", "round_robin"),
        ],
    )


def auth_jwks_source(auth: grpc.aio.Channel, timeout: float = 2.0) -> JwksSource:
    """The auth service's public keys, fetched over gRPC (GetJwks)."""
    stub = auth_pb2_grpc.AuthServiceStub(auth)

    async def fetch() -> Mapping[str, Any]:
        reply = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=timeout)
        jwks: Mapping[str, Any] = msgspec.json.decode(reply.jwks_json)
        return jwks

    return fetch


def token_verifier(
    settings: Settings, auth: grpc.aio.Channel, revoked: Container[str]
) -> TokenVerifier:
    """The access-token verifier of a service other than auth."""
    return TokenVerifier(
        auth_jwks_source(auth),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        jwks_max_age=settings.jwks_cache_seconds,
        unknown_kid_refresh_interval=min(30.0, settings.jwks_cache_seconds),
        revoked=revoked,
    )


async def follow_pages(
    auth: auth_pb2_grpc.AuthServiceAsyncStub,
    direction: Literal["followers", "following"],
    user_id: str,
    page_size: int,
) -> AsyncIterator[list[str]]:
    """The ids of a user's followers (or of whom they follow), from auth, a page at a time."""
    token = ""
    while True:
        reply: auth_pb2.GetFollowersResponse | auth_pb2.GetFollowingResponse
        if direction == "followers":
            reply = await auth.GetFollowers(
                auth_pb2.GetFollowersRequest(
                    user_id=user_id, page_size=page_size, page_token=token
                ),
                timeout=PEER_TIMEOUT,
            )
        else:
            reply = await auth.GetFollowing(
                auth_pb2.GetFollowingRequest(
                    user_id=user_id, page_size=page_size, page_token=token
                ),
                timeout=PEER_TIMEOUT,
            )
        yield list(reply.user_ids)
        token = reply.next_page_token
        if not token:
            return


async def find_post(
    posts: posts_pb2_grpc.PostsServiceAsyncStub, post_id: str
) -> posts_pb2.Post | None:
    """The post, from the posts service; None when there is none."""
    reply = await posts.GetPosts(posts_pb2.GetPostsRequest(ids=[post_id]), timeout=PEER_TIMEOUT)
    return reply.posts[0] if reply.posts else None

"""Wiring of the posts service: posts, likes, feeds and home timelines."""

from __future__ import annotations

import grpc
from social.posts.v1 import posts_pb2, posts_pb2_grpc
from social_common.authors import AuthorDirectory
from social_common.events import EventConsumer, consumer_name
from social_common.idempotency import Idempotency
from social_common.peers import channel, token_verifier
from social_common.ratelimit import RateLimiter
from social_common.runner import Resources, ServiceSpec, Wiring

from posts.api import PostsApi
from posts.config import PostsConfig
from posts.rpc import PostsRpc
from posts.service import PostsService


def wire(resources: Resources) -> Wiring:
    assert resources.db is not None
    settings = resources.settings
    config = PostsConfig.from_env()
    auth, media = channel(settings.peers["auth"]), channel(settings.peers["media"])
    authors = AuthorDirectory(
        resources.redis,
        auth,
        ttl_seconds=config.author_cache_seconds,
        local_max_entries=config.local_cache_entries,
    )
    service = PostsService(resources.db, resources.redis, config, auth, media, authors)
    api = PostsApi(
        service,
        token_verifier(settings, auth),
        RateLimiter(resources.redis),
        Idempotency(resources.redis, "posts"),
        config,
    )
    rpc = PostsRpc(service)
    consumer = EventConsumer(resources.redis, "posts", consumer_name(), service.event_handlers())

    def register_grpc(server: grpc.aio.Server) -> list[str]:
        posts_pb2_grpc.add_PostsServiceServicer_to_server(rpc, server)
        return [posts_pb2.DESCRIPTOR.services_by_name["PostsService"].full_name]

    async def close() -> None:
        await auth.close()
        await media.close()

    return Wiring(
        routes=api.routes(),
        register_grpc=register_grpc,
        background=[consumer.run, service.listen_for_changes, service.purge_forever],
        close=close,
        middleware=[api.rendered.middleware],
    )


def spec() -> ServiceSpec:
    return ServiceSpec(name="posts", wire=wire)

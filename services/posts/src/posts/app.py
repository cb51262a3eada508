"""Wiring of the posts service: posts, likes, feeds and home timelines."""

from __future__ import annotations

from social.posts.v1 import posts_pb2, posts_pb2_grpc
from social_common.authors import AuthorDirectory
from social_common.idempotency import Idempotency
from social_common.peers import channel, token_verifier
from social_common.ratelimit import RateLimiter
from social_common.runner import Resources, Servicer, ServiceSpec, Wiring

from posts.api import PostsApi
from posts.rpc import PostsRpc
from posts.service import PostsService
from posts.settings import PostsSettings


def wire(resources: Resources[PostsSettings]) -> Wiring:
    assert resources.db is not None
    settings = resources.settings
    auth, media = channel(settings.peers["auth"]), channel(settings.peers["media"])
    authors = AuthorDirectory(
        resources.redis,
        auth,
        ttl_seconds=settings.author_cache_seconds,
        local_max_entries=settings.local_cache_entries,
    )
    service = PostsService(resources.db, resources.redis, settings, auth, media, authors)
    api = PostsApi(
        service,
        token_verifier(settings, auth),
        RateLimiter(resources.redis),
        Idempotency(resources.redis, "posts"),
        settings,
    )

    async def close() -> None:
        await auth.close()
        await media.close()

    return Wiring(
        routes=api.routes(),
        servicers=[
            Servicer(
                PostsRpc(service),
                posts_pb2_grpc.add_PostsServiceServicer_to_server,
                posts_pb2.DESCRIPTOR.services_by_name["PostsService"],
            )
        ],
        events=service.event_handlers(),
        background=[service.listen_for_changes, service.purge_forever],
        close=close,
        middleware=[api.rendered.middleware],
    )


def spec() -> ServiceSpec[PostsSettings]:
    return ServiceSpec(name="posts", settings=PostsSettings, wire=wire)

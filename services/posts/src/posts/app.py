"""Wiring of the posts service: posts, likes, feeds and home timelines."""

from __future__ import annotations

from social.posts.v1 import posts_pb2, posts_pb2_grpc
from social_common import userdata
from social_common.authors import AuthorDirectory
from social_common.idempotency import Idempotency
from social_common.peers import channel, token_verifier
from social_common.ratelimit import RateLimiter
from social_common.runner import Resources, Servicer, ServiceSpec, Wiring

from posts.api import PostsApi
from posts.cache import PostCache
from posts.events import PostEvents
from posts.export import user_data
from posts.feeds import PostFeeds
from posts.likes import LikedSets
from posts.rpc import PostsRpc
from posts.settings import PostsSettings
from posts.timelines import Timelines
from posts.writes import PostWrites


def wire(resources: Resources[PostsSettings]) -> Wiring:
    assert resources.db is not None
    settings, db, redis = resources.settings, resources.db, resources.redis
    auth, media = channel(settings.peers["auth"]), channel(settings.peers["media"])
    authors = AuthorDirectory(
        redis,
        auth,
        ttl_seconds=settings.author_cache_seconds,
        local_max_entries=settings.local_cache_entries,
    )
    cache = PostCache(redis, settings)
    timelines = Timelines(redis, settings.timeline_size, settings.timeline_ttl_seconds)
    likes = LikedSets(redis)
    writes = PostWrites(db, cache, timelines, likes, media, authors)
    feeds = PostFeeds(db, cache, timelines, likes, auth, authors, settings)
    events = PostEvents(db, cache, timelines, writes, auth, settings)
    api = PostsApi(
        writes,
        feeds,
        cache,
        token_verifier(settings, auth, resources.revoked),
        RateLimiter(redis),
        Idempotency(redis, "posts"),
        settings,
    )

    async def close() -> None:
        await auth.close()
        await media.close()

    return Wiring(
        routes=api.routes(),
        servicers=[
            Servicer(
                PostsRpc(feeds),
                posts_pb2_grpc.add_PostsServiceServicer_to_server,
                posts_pb2.DESCRIPTOR.services_by_name["PostsService"],
            ),
            userdata.servicer(user_data(db)),
        ],
        events=events.handlers(),
        background=[cache.listen_for_changes, events.purge_forever],
        close=close,
        middleware=[api.rendered.middleware],
    )


def spec() -> ServiceSpec[PostsSettings]:
    return ServiceSpec(name="posts", settings_class=PostsSettings, wire=wire)

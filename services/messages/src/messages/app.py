"""Wiring of the messages service: messages on posts, and their events."""

from __future__ import annotations

import grpc
from social.messages.v1 import messages_pb2, messages_pb2_grpc
from social_common.authors import AuthorDirectory
from social_common.events import EventConsumer, consumer_name
from social_common.idempotency import Idempotency
from social_common.peers import channel, token_verifier
from social_common.ratelimit import RateLimiter
from social_common.runner import Resources, ServiceSpec, Wiring

from messages.api import MessagesApi
from messages.config import MessagesConfig
from messages.rpc import MessagesRpc
from messages.service import MessagesService


def wire(resources: Resources) -> Wiring:
    assert resources.db is not None
    settings = resources.settings
    config = MessagesConfig.from_env()
    auth, posts = channel(settings.peers["auth"]), channel(settings.peers["posts"])
    authors = AuthorDirectory(resources.redis, auth, ttl_seconds=config.author_cache_seconds)
    service = MessagesService(resources.db, posts, authors)
    api = MessagesApi(
        service,
        token_verifier(settings, auth),
        RateLimiter(resources.redis),
        Idempotency(resources.redis, "messages"),
        config,
    )
    rpc = MessagesRpc(service)
    consumer = EventConsumer(resources.redis, "messages", consumer_name(), service.event_handlers())

    def register_grpc(server: grpc.aio.Server) -> list[str]:
        messages_pb2_grpc.add_MessagesServiceServicer_to_server(rpc, server)
        return [messages_pb2.DESCRIPTOR.services_by_name["MessagesService"].full_name]

    async def close() -> None:
        await auth.close()
        await posts.close()

    return Wiring(
        routes=api.routes(),
        register_grpc=register_grpc,
        background=[consumer.run],
        close=close,
    )


def spec() -> ServiceSpec:
    return ServiceSpec(name="messages", wire=wire)

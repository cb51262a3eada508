"""Wiring of the messages service: messages on posts, and their events."""

from __future__ import annotations

from social.messages.v1 import messages_pb2, messages_pb2_grpc
from social_common import userdata
from social_common.authors import AuthorDirectory
from social_common.idempotency import Idempotency
from social_common.peers import channel, token_verifier
from social_common.ratelimit import RateLimiter
from social_common.runner import Resources, Servicer, ServiceSpec, Wiring

from messages.api import MessagesApi
from messages.events import MessagesEvents
from messages.export import user_data
from messages.rpc import MessagesRpc
from messages.service import MessagesService
from messages.settings import MessagesSettings


def wire(resources: Resources[MessagesSettings]) -> Wiring:
    assert resources.db is not None
    settings = resources.settings
    auth, posts = channel(settings.peers["auth"]), channel(settings.peers["posts"])
    authors = AuthorDirectory(resources.redis, auth, ttl_seconds=settings.author_cache_seconds)
    service = MessagesService(resources.db, posts, authors)
    api = MessagesApi(
        service,
        token_verifier(settings, auth, resources.revoked),
        RateLimiter(resources.redis),
        Idempotency(resources.redis, "messages"),
        settings,
    )

    async def close() -> None:
        await auth.close()
        await posts.close()

    return Wiring(
        routes=api.routes(),
        servicers=[
            Servicer(
                MessagesRpc(service),
                messages_pb2_grpc.add_MessagesServiceServicer_to_server,
                messages_pb2.DESCRIPTOR.services_by_name["MessagesService"],
            ),
            userdata.servicer(user_data(resources.db)),
        ],
        events=MessagesEvents(resources.db, service).handlers(),
        close=close,
    )


def spec() -> ServiceSpec[MessagesSettings]:
    return ServiceSpec(name="messages", settings_class=MessagesSettings, wire=wire)

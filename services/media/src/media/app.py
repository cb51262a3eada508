"""Wiring of the media service: uploads, their renditions in S3, their lifecycle."""

from __future__ import annotations

import grpc
from social.media.v1 import media_pb2, media_pb2_grpc
from social_common.events import EventConsumer, consumer_name
from social_common.peers import channel, token_verifier
from social_common.ratelimit import RateLimiter
from social_common.runner import Resources, ServiceSpec, Wiring

from media.api import MediaApi
from media.config import MediaConfig
from media.events import handlers
from media.rpc import MediaRpc
from media.service import MediaService
from media.storage import Storage


def wire(resources: Resources) -> Wiring:
    assert resources.db is not None
    settings = resources.settings
    config = MediaConfig.from_env(production=settings.environment == "production")
    storage = Storage(config)
    service = MediaService(resources.db, storage, config)
    auth = channel(settings.peers["auth"])
    api = MediaApi(service, token_verifier(settings, auth), RateLimiter(resources.redis), config)
    rpc = MediaRpc(service, config.public_base_url)
    consumer = EventConsumer(
        resources.redis, group="media", consumer=consumer_name(), handlers=handlers(service)
    )

    def register_grpc(server: grpc.aio.Server) -> list[str]:
        media_pb2_grpc.add_MediaServiceServicer_to_server(rpc, server)
        return [media_pb2.DESCRIPTOR.services_by_name["MediaService"].full_name]

    async def close() -> None:
        service.close()
        storage.close()
        await auth.close()

    return Wiring(
        routes=api.routes(),
        register_grpc=register_grpc,
        background=[service.sweep_forever, consumer.run],
        close=close,
        checks={"s3": storage.check},
    )


def spec() -> ServiceSpec:
    return ServiceSpec(name="media", wire=wire)

"""Wiring of the media service: uploads, their renditions in S3, their lifecycle."""

from __future__ import annotations

from social.media.v1 import media_pb2, media_pb2_grpc
from social_common import userdata
from social_common.peers import channel, token_verifier
from social_common.ratelimit import RateLimiter
from social_common.runner import Resources, Servicer, ServiceSpec, Wiring

from media.api import MediaApi
from media.events import MediaEvents
from media.export import user_data
from media.rpc import MediaRpc
from media.service import MediaService
from media.settings import MediaSettings
from media.storage import Storage


def wire(resources: Resources[MediaSettings]) -> Wiring:
    assert resources.db is not None
    settings = resources.settings
    storage = Storage(settings)
    service = MediaService(resources.db, storage, settings)
    auth = channel(settings.peers["auth"])
    api = MediaApi(
        service,
        token_verifier(settings, auth, resources.revoked),
        RateLimiter(resources.redis),
        settings,
    )

    async def close() -> None:
        service.close()
        storage.close()
        await auth.close()

    return Wiring(
        routes=api.routes(),
        servicers=[
            Servicer(
                MediaRpc(service, settings.public_base_url),
                media_pb2_grpc.add_MediaServiceServicer_to_server,
                media_pb2.DESCRIPTOR.services_by_name["MediaService"],
            ),
            userdata.servicer(user_data(resources.db, settings.public_base_url)),
        ],
        events=MediaEvents(service).handlers(),
        background=[service.sweep_forever],
        close=close,
        checks={"s3": storage.check},
    )


def spec() -> ServiceSpec[MediaSettings]:
    return ServiceSpec(name="media", settings_class=MediaSettings, wire=wire)

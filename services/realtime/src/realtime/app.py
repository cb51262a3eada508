"""Wiring of the realtime service: WebSockets at /ws, fed from the fleet's events."""

from __future__ import annotations

from social_common.events import EventConsumer, consumer_name
from social_common.peers import channel, token_verifier
from social_common.runner import Resources, ServiceSpec, Wiring
from starlette.routing import WebSocketRoute

from realtime.config import RealtimeConfig
from realtime.hub import Hub
from realtime.presence import Presence
from realtime.router import Router
from realtime.ws import RealtimeEndpoint


def wire(resources: Resources) -> Wiring:
    settings = resources.settings
    config = RealtimeConfig.from_env()
    auth, posts = channel(settings.peers["auth"]), channel(settings.peers["posts"])
    hub = Hub(resources.redis)
    presence = Presence(resources.redis, config.max_connections_per_user)
    endpoint = RealtimeEndpoint(
        hub, resources.redis, token_verifier(settings, auth), posts, config, presence
    )
    router = Router(resources.redis, auth, config.retention)
    consumer = EventConsumer(resources.redis, "realtime", consumer_name(), router.handlers())

    async def close() -> None:
        await auth.close()
        await posts.close()

    return Wiring(
        routes=[WebSocketRoute("/ws", endpoint.handle)],
        background=[hub.run, consumer.run, presence.run],
        close=close,
    )


def spec() -> ServiceSpec:
    return ServiceSpec(name="realtime", wire=wire)

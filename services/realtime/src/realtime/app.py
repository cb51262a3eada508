"""Wiring of the realtime service: WebSockets at /ws, fed from the fleet's events."""

from __future__ import annotations

from social_common.errors import Problem
from social_common.peers import channel, token_verifier
from social_common.runner import Resources, ServiceSpec, Wiring
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from realtime.api import RealtimeEndpoint
from realtime.events import Router
from realtime.hub import Hub
from realtime.presence import Presence
from realtime.settings import RealtimeSettings


def wire(resources: Resources[RealtimeSettings]) -> Wiring:
    settings = resources.settings
    auth, posts = channel(settings.peers["auth"]), channel(settings.peers["posts"])
    hub = Hub(resources.redis)
    presence = Presence(resources.redis, settings.max_connections_per_user)
    endpoint = RealtimeEndpoint(
        hub,
        resources.redis,
        token_verifier(settings, auth, resources.revoked),
        posts,
        settings,
        presence,
    )
    resources.revoked.on_revoked(endpoint.end_sessions)
    router = Router(resources.redis, auth, settings.retention)

    async def close() -> None:
        await auth.close()
        await posts.close()

    return Wiring(
        routes=[
            WebSocketRoute("/ws", endpoint.handle),
            Route("/ws", upgrade_required, methods=["GET"]),
        ],
        events=router.handlers(),
        background=[hub.run, presence.run],
        close=close,
    )


async def upgrade_required(_request: Request) -> Response:
    """/ws asked for without the upgrade to a WebSocket (RFC 9110 §15.5.22)."""
    raise Problem(
        426,
        "upgrade_required",
        "Connect with a WebSocket upgrade.",
        headers={"Upgrade": "websocket", "Connection": "Upgrade"},
    )


def spec() -> ServiceSpec[RealtimeSettings]:
    return ServiceSpec(name="realtime", settings_class=RealtimeSettings, wire=wire)

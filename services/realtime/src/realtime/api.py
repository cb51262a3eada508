"""The WebSocket endpoint ``/ws``: authentication, the client's commands, and
the frames it is sent.

Client frames (JSON text): ``{"op": "subscribe", "channel": "post:<id>" |
"user" | "feed", "since": "<event id>"?}``, ``{"op": "unsubscribe",
"channel": …}``, ``{"op": "ping"}``. Server frames: ``{"op": "event",
"channel", "id", "type", "data"}``, ``{"op": "ack", "for", "channel"?,
"last"?}``, ``{"op": "error", "code", "detail", "channel"?}`` (``gap`` names
its channel). A subscription without ``since`` is acknowledged with
``last``, the channel's newest event then: a client that reconnects before
it has an event of its own sends that back as ``since``, so it misses
nothing either. The token comes in the ``Authorization`` header or, from
browsers, as the subprotocol pair ``bearer, <token>``; it is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import msgspec
import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind
from social.posts.v1 import posts_pb2_grpc
from social_common.ids import parse_uuid
from social_common.logging import get_logger
from social_common.peers import find_post
from social_common.redis import UNAVAILABLE as REDIS_UNAVAILABLE
from social_common.redis import as_text, stream_position
from social_common.tokens import AccessClaims, InvalidToken, TokenVerifier, bearer_token
from social_common.tracing import continued_span
from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime.hub import (
    CONNECTIONS,
    TRY_AGAIN_LATER,
    Client,
    Hub,
    Watch,
    stream_key,
)
from realtime.presence import Presence
from realtime.settings import RealtimeSettings

log = get_logger(__name__)

BEARER_PROTOCOL = "bearer"
POLICY_VIOLATION = 1008
# Channels named without an id: the caller's own.
OWN_CHANNELS = frozenset({"user", "feed"})
# The position of a channel without events: a subscription's ``last`` then,
# and a ``since`` that asks for every event kept.
EMPTY = "0-0"


class Refused(Exception):
    """A command the server answers with an error frame."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class RealtimeEndpoint:
    def __init__(
        self,
        hub: Hub,
        redis_client: aioredis.Redis,
        verifier: TokenVerifier,
        posts: grpc.aio.Channel,
        settings: RealtimeSettings,
        presence: Presence,
    ) -> None:
        self.hub = hub
        self.redis = redis_client
        self.verifier = verifier
        self.posts = posts_pb2_grpc.PostsServiceStub(posts)
        self.settings = settings
        # Connections per user are counted across the fleet.
        self.presence = presence
        # What ends each open socket, by the session of its token.
        self._sockets_by_session: dict[str, set[asyncio.Event]] = {}

    async def _authenticate(self, websocket: WebSocket) -> tuple[AccessClaims, str | None] | None:
        """The token's claims, and the subprotocol to accept (browsers send the
        token as the second of ``bearer, <token>``); None when there is no valid token."""
        subprotocol = None
        token = bearer_token(websocket)
        offered = [
            p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",")
        ]
        if not token and len(offered) == 2 and offered[0] == BEARER_PROTOCOL:
            token, subprotocol = offered[1], BEARER_PROTOCOL
        if not token:
            return None
        try:
            claims = await self.verifier.verify(token)
        except InvalidToken:
            return None
        return claims, subprotocol

    def end_sessions(self, sessions: frozenset[str]) -> None:
        """Closes the sockets opened with a token of these (revoked) sessions."""
        for session_id in sessions:
            for ended in self._sockets_by_session.get(session_id, ()):
                ended.set()

    async def handle(self, websocket: WebSocket) -> None:
        identity = await self._authenticate(websocket)
        if identity is None:
            await websocket.close(code=POLICY_VIOLATION, reason="a valid access token is required")
            return
        claims, subprotocol = identity
        user_id = claims.subject
        try:
            lease = await self.presence.acquire(user_id)
        except REDIS_UNAVAILABLE as exc:
            # Refused, not let in uncounted: without Redis this process can
            # deliver nothing anyway. Accepted to be closed with 1013 (try
            # again later), which browsers see, unlike a refused handshake's
            # status; clients reconnect with backoff as after any 1013.
            log.warning("presence_unavailable", error=str(exc))
            await websocket.accept(subprotocol=subprotocol)
            await websocket.close(code=TRY_AGAIN_LATER, reason="try again later")
            return
        if lease is None:
            await websocket.close(code=POLICY_VIOLATION, reason="too many connections")
            return
        ended = asyncio.Event()
        sockets = self._sockets_by_session.setdefault(claims.session_id, set())
        sockets.add(ended)
        try:
            await websocket.accept(subprotocol=subprotocol)
            await self._serve(websocket, user_id, ended)
        finally:
            sockets.discard(ended)
            if not sockets:
                self._sockets_by_session.pop(claims.session_id, None)
            await self.presence.release(user_id, lease)

    async def _serve(self, websocket: WebSocket, user_id: str, ended: asyncio.Event) -> None:
        """Runs an accepted connection until it ends, or is ``ended`` (its
        session was revoked)."""
        CONNECTIONS.inc()
        cut = asyncio.Event()
        client = Client(user_id, self.settings.send_queue, self.settings.retention, cut.set)
        sender = asyncio.create_task(self._send(websocket, client))
        receiver = asyncio.create_task(self._receive(websocket, client))
        cut_off = asyncio.create_task(cut.wait())
        revoked = asyncio.create_task(ended.wait())
        tasks = {sender, receiver, cut_off, revoked}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for key in list(client.watches):
                await self.hub.unwatch(key, client)
            CONNECTIONS.dec()
            with contextlib.suppress(Exception):
                if ended.is_set():
                    await websocket.close(code=POLICY_VIOLATION, reason="the session has ended")
                elif cut.is_set():
                    await websocket.close(
                        code=TRY_AGAIN_LATER, reason="too slow: reconnect with since"
                    )

    async def _send(self, websocket: WebSocket, client: Client) -> None:
        while True:
            frame = await client.queue.get()
            if isinstance(frame, str):
                await websocket.send_text(frame)
                continue
            with continued_span(
                "websocket send",
                {"traceparent": frame.traceparent},
                SpanKind.PRODUCER,
                {"realtime.event_id": frame.id, "enduser.id": client.user_id},
            ):
                await websocket.send_text(frame.frame)

    async def _receive(self, websocket: WebSocket, client: Client) -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                text = await websocket.receive_text()
                if len(text) > self.settings.max_frame_bytes:
                    await websocket.close(code=1009, reason="frame too large")
                    return
                try:
                    await self._command(client, text)
                except Refused as refused:
                    client.send({"op": "error", "code": refused.code, "detail": refused.detail})

    async def _command(self, client: Client, text: str) -> None:
        try:
            command = msgspec.json.decode(text)
        except msgspec.DecodeError:
            raise Refused("invalid_frame", "frames are JSON objects") from None
        if not isinstance(command, dict):
            raise Refused("invalid_frame", "frames are JSON objects")
        op = command.get("op")
        if op == "ping":
            client.send({"op": "ack", "for": "ping"})
        elif op == "subscribe":
            await self._subscribe(client, command.get("channel"), command.get("since"))
        elif op == "unsubscribe":
            channel = canonical_channel(command.get("channel"))
            key = stream_key(self._own(client, channel))
            if key in client.watches:
                del client.watches[key]
                await self.hub.unwatch(key, client)
            client.send({"op": "ack", "for": "unsubscribe", "channel": channel})
        else:
            raise Refused("unknown_op", "op is subscribe, unsubscribe or ping")

    @staticmethod
    def _own(client: Client, channel: str) -> str:
        """The internal name of a channel (``user`` and ``feed`` are the client's own)."""
        return f"{channel}:{client.user_id}" if channel in OWN_CHANNELS else channel

    async def _subscribe(self, client: Client, named: Any, since: Any) -> None:
        channel = canonical_channel(named)
        if since is not None and (not isinstance(since, str) or not _is_event_id(since)):
            raise Refused("invalid_since", "since is the id of an event you received")
        await self._authorize(channel)
        key = stream_key(self._own(client, channel))
        if key in client.watches:
            client.send({"op": "ack", "for": "subscribe", "channel": channel})
            return
        if len(client.watches) >= self.settings.max_channels_per_connection:
            raise Refused("too_many_channels", "unsubscribe from a channel first")
        client.watches[key] = Watch(channel)
        # Read before the live subscription: every event after the tip then
        # reaches the client, live or from the buffer.
        tip = await self._tip(key) if since is None else EMPTY
        await self.hub.watch(key, channel, client)
        # Live events now wait in the watch's buffer while the past is read.
        watch = client.watches[key]
        if since is None:
            client.send({"op": "ack", "for": "subscribe", "channel": channel, "last": tip})
            watch.last = stream_position(tip)
        else:
            client.send({"op": "ack", "for": "subscribe", "channel": channel})
            # From ``since`` on, ``since`` itself first if it is still kept
            # ("0-0": the channel had no event when the client subscribed).
            kept: Any = await self.redis.xrange(key, min=since, max="+")
            if since == EMPTY or (kept and as_text(kept[0][0]) == since):
                watch.last = stream_position(since)
                for entry_id, fields in kept if since == EMPTY else kept[1:]:
                    event = self.hub.event(key, as_text(entry_id), fields[b"type"], fields[b"data"])
                    await client.replay(key, event)
                tip = as_text(kept[-1][0]) if kept else since
            else:
                # The event named is no longer kept: what followed may be lost.
                tip = as_text(kept[-1][0]) if kept else await self._tip(key)
                watch.last = stream_position(tip)
                client.send(
                    {
                        "op": "error",
                        "code": "gap",
                        "detail": "events since then are no longer kept: fetch the state over REST",
                        "channel": channel,
                    }
                )
        self.hub.note(key, tip)
        await client.go_live(key)

    async def _tip(self, key: str) -> str:
        """The id of the newest event the stream ``key`` keeps (EMPTY: none)."""
        newest: Any = await self.redis.xrevrange(key, count=1)
        return as_text(newest[0][0]) if newest else EMPTY

    async def _authorize(self, channel: str) -> None:
        """``post:<id>`` for a post that exists (every post is public); ``user``
        (notifications) and ``feed`` (new posts of whom one follows) are the
        caller's own."""
        if channel in OWN_CHANNELS:
            return
        if await find_post(self.posts, channel.removeprefix("post:")) is None:
            raise Refused("not_found", "no such post")


def canonical_channel(named: object) -> str:
    """The channel a client names, as the server names it: ``user``, ``feed``,
    or ``post:<id>`` with the id in its canonical form, however the client
    spelled it (REST reads ids by the same rule, social_common.ids), so that
    every spelling of one post is one channel."""
    if not isinstance(named, str):
        named = ""
    if named in OWN_CHANNELS:
        return named
    kind, _, raw_id = named.partition(":")
    post_id = parse_uuid(raw_id) if kind == "post" else None
    if post_id is None:
        raise Refused("invalid_channel", "channel is post:<id>, user or feed")
    return f"post:{post_id}"


def _is_event_id(value: str) -> bool:
    millis, dash, seq = value.partition("-")
    return millis.isdigit() and bool(dash) and seq.isdigit()

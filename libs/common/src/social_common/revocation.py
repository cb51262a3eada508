"""Sessions ended before their time, as every token verifier must know them.

The auth service publishes ``sessions.revoked`` when a logout, a password
change or a refresh token used twice ends sessions (through its outbox: a
revocation committed is never lost on its way to Redis). Access tokens name
their session in the ``sid`` claim. Every process of every service follows
the whole stream (not as a consumer group, which would share the events out
among processes) and keeps each revoked session until the last of its access
tokens has expired: a set lookup per request, news within the outbox relay's
and one blocking read's latency, and on start the revocations still in force,
read backwards from the newest until one that no longer matters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from google.protobuf.message import DecodeError
from social.auth.v1.events_pb2 import SessionsRevoked
from social.events.v1.events_pb2 import Envelope

from social_common.events import PAYLOAD_VERSION, streams_of
from social_common.logging import get_logger
from social_common.redis import UNAVAILABLE as REDIS_UNAVAILABLE
from social_common.redis import as_text
from social_common.tasks import cancel_requested

log = get_logger(__name__)

[STREAM] = streams_of("sessions.revoked")
# Entries per read, and how long one read waits for news (well within the
# client's socket timeout, social_common.redis.SOCKET_TIMEOUT_S).
_BATCH = 500
_BLOCK_MS = 1_000

# Called with the sessions of each revocation as it arrives (realtime closes their sockets).
Listener = Callable[[frozenset[str]], None]


class RevokedSessions:
    """The revoked sessions whose tokens have not all expired yet (``in``)."""

    def __init__(
        self, redis_client: aioredis.Redis, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis_client
        self._clock = clock
        self._until: dict[str, float] = {}
        self._listeners: list[Listener] = []
        # The newest entry read; None until the revocations in force are loaded.
        self._position: str | None = None
        self._pruned_at = clock()
        self.loaded = asyncio.Event()

    def __contains__(self, session_id: object) -> bool:
        until = self._until.get(session_id) if isinstance(session_id, str) else None
        return until is not None and until > self._clock()

    def on_revoked(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def check(self) -> None:
        """A readiness check: a process takes no request before it knows the
        revocations in force."""
        if not self.loaded.is_set():
            raise RuntimeError("revoked sessions not loaded yet")

    async def run(self) -> None:
        """Follows the stream until cancelled (a background task of every service)."""
        while not cancel_requested():
            try:
                if self._position is None:
                    self._position = await self._load()
                    self.loaded.set()
                await self._follow()
            except REDIS_UNAVAILABLE as exc:
                log.warning("revocations_unavailable", error=str(exc))
                await asyncio.sleep(1.0)

    async def _load(self) -> str:
        """Reads the stream from its newest entry back to the first revocation
        that has expired (they come in the order they were made, each lasting
        the same token lifetime); returns the newest entry's id."""
        newest: Any = await self._redis.xrevrange(STREAM, count=1)
        if not newest:
            return "0-0"
        position = as_text(newest[0][0])
        before = "+"
        while True:
            entries: Any = await self._redis.xrevrange(STREAM, max=before, count=_BATCH)
            if not entries or not all([self._apply(fields) for _, fields in entries]):
                return position
            before = "(" + as_text(entries[-1][0])

    async def _follow(self) -> None:
        assert self._position is not None
        replies: Any = await self._redis.xread(
            {STREAM: self._position}, count=_BATCH, block=_BLOCK_MS
        )
        for _, entries in replies:
            for entry_id, fields in entries:
                self._apply(fields, notify=True)
                self._position = as_text(entry_id)
        if self._clock() - self._pruned_at > 60:
            now = self._pruned_at = self._clock()
            self._until = {sid: until for sid, until in self._until.items() if until > now}

    def _apply(self, fields: Mapping[bytes, bytes], notify: bool = False) -> bool:
        """Records one revocation; whether it is still in force."""
        try:
            envelope = Envelope.FromString(fields[b"envelope"])
            event = SessionsRevoked.FromString(envelope.payload)
        except (KeyError, DecodeError):
            log.warning("revocation_ignored", reason="undecodable")
            return True
        if envelope.version != PAYLOAD_VERSION:
            log.warning("revocation_ignored", reason=f"version {envelope.version}")
            return True
        until = event.expires_at.ToSeconds()
        if until <= self._clock():
            return False
        sessions = frozenset(event.session_ids)
        for session_id in sessions:
            self._until[session_id] = until
        if notify:
            for listener in self._listeners:
                listener(sessions)
        return True

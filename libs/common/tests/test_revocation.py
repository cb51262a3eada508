"""Revoked sessions, read from a real Redis stream: those in force on start,
then each as it is published, until their tokens would have expired."""

from __future__ import annotations

import asyncio
import subprocess
import time

from social.auth.v1.events_pb2 import SessionsRevoked
from social_common.events import make_envelope
from social_common.redis import SOCKET_TIMEOUT_S, create_redis
from social_common.revocation import STREAM, RevokedSessions
from social_stack.processes import Component
from structlog.testing import capture_logs


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _revoke(client: object, sessions: list[str], expires_at: float) -> None:
    event = SessionsRevoked(user_id="u", session_ids=sessions, reason="test")
    event.expires_at.FromSeconds(int(expires_at))
    envelope = make_envelope("auth", "sessions.revoked", "u", event)
    await client.xadd(STREAM, {"envelope": envelope.SerializeToString()})  # type: ignore[attr-defined]


def test_revocations_in_force_are_loaded_then_followed_until_they_expire(
    redis_server: tuple[Component, dict[str, subprocess.Popen[bytes]]],
) -> None:
    component, _ = redis_server
    clock = Clock()

    async def main() -> None:
        client = create_redis(f"redis://{component.probe.address}/0")
        # Published before the process started: one long expired, two in force.
        await _revoke(client, ["expired"], clock.now - 1)
        await _revoke(client, ["a1", "a2"], clock.now + 600)
        await _revoke(client, ["b"], clock.now + 900)
        revoked = RevokedSessions(client, clock=clock)
        heard: list[frozenset[str]] = []
        news = asyncio.Event()

        def hear(sessions: frozenset[str]) -> None:
            heard.append(sessions)
            news.set()

        revoked.on_revoked(hear)
        follower = asyncio.create_task(revoked.run())
        try:
            async with asyncio.timeout(10):
                await revoked.loaded.wait()
            in_force = {s for s in ("a1", "a2", "b", "expired") if s in revoked}
            assert in_force == {"a1", "a2", "b"}
            assert heard == []  # the past is no news
            await _revoke(client, ["c"], clock.now + 600)
            async with asyncio.timeout(10):
                await news.wait()
            assert heard == [frozenset({"c"})]
            assert "c" in revoked
            # Once their tokens have expired, revocations no longer count.
            clock.now += 700
            assert ("a1" in revoked, "b" in revoked, "c" in revoked) == (False, True, False)
        finally:
            follower.cancel()
            await client.aclose()

    asyncio.run(main())


def test_a_quiet_stream_is_waited_on_without_timeouts(
    redis_server: tuple[Component, dict[str, subprocess.Popen[bytes]]],
) -> None:
    """Blocking reads ask Redis to wait less than the client waits for a
    reply: a stream with no news for longer than the socket timeout is no
    error, and news after it arrives at once."""
    component, _ = redis_server

    async def main() -> None:
        client = create_redis(f"redis://{component.probe.address}/0")
        revoked = RevokedSessions(client)
        news = asyncio.Event()
        revoked.on_revoked(lambda _: news.set())
        with capture_logs() as logs:
            follower = asyncio.create_task(revoked.run())
            try:
                async with asyncio.timeout(10):
                    await revoked.loaded.wait()
                await asyncio.sleep(SOCKET_TIMEOUT_S + 1)
                await _revoke(client, ["late"], time.time() + 600)
                async with asyncio.timeout(2):
                    await news.wait()
            finally:
                follower.cancel()
                await client.aclose()
        assert [e for e in logs if e["event"] == "revocations_unavailable"] == []

    asyncio.run(main())

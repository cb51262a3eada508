"""WebSockets through Envoy: messages delivered live, missed ones replayed;
connections per user counted across realtime processes."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

import grpc
import httpx
import psycopg
import pytest
import redis
import redis.asyncio as aioredis
from posts.timelines import timeline_key
from realtime.api import EMPTY, RealtimeEndpoint
from realtime.events import Router
from realtime.hub import TRY_AGAIN_LATER, Hub, stream_key
from realtime.presence import LEASE_SECONDS, Presence, presence_key
from realtime.settings import RealtimeSettings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from social.events.v1.events_pb2 import Envelope
from social.messages.v1.events_pb2 import MessageCreated
from social_common.events import dead_letters_of, make_envelope, stream_for
from social_common.ids import uuid7
from social_common.redis import (
    UNAVAILABLE,
    as_text,
    create_redis,
    create_sync_redis,
    node_of,
    primaries_info,
    stream_position,
)
from social_common.tokens import AccessClaims, TokenVerifier
from social_stack.local import Endpoints, Ports, Stack, redis_cluster_asked
from social_stack.redis_cluster import move_slot
from social_stack.testing import (
    Account,
    answers,
    client,
    create_account,
    create_post,
    upload_image,
    wait_until,
)
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

# The services run with the test process's environment plus the plugin's
# settings, which leave this limit alone: what this process reads is theirs.
LIMIT = RealtimeSettings.from_env("realtime").max_connections_per_user


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/ws"


def _connect(base: str, account: Account, **options: Any) -> ClientConnection:
    connection: ClientConnection = connect(
        _ws_url(base), additional_headers=account.auth, open_timeout=10, **options
    )
    return connection


def _frame(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return frame


def _subscribe(ws: ClientConnection, channel: str, since: str | None = None) -> dict[str, Any]:
    """Subscribe; the ack (with ``last`` when there is no ``since``)."""
    ws.send(
        json.dumps({"op": "subscribe", "channel": channel, **({"since": since} if since else {})})
    )
    ack = _frame(ws)
    assert {k: v for k, v in ack.items() if k != "last"} == {
        "op": "ack",
        "for": "subscribe",
        "channel": channel,
    }
    assert ("last" in ack) == (since is None), ack
    return ack


def _say(stack: Endpoints, account: Account, post_id: str, text: str) -> str:
    with client(stack.gateway_url) as http:
        sent = http.post(
            f"/api/v1/posts/{post_id}/messages", headers=account.auth, json={"message": text}
        )
    assert sent.status_code == 201, sent.text
    message_id: str = sent.json()["id"]
    return message_id


def _pings(ws: ClientConnection) -> bool:
    ws.send(json.dumps({"op": "ping"}))
    return _frame(ws) == {"op": "ack", "for": "ping"}


def _refused(base: str, account: Account) -> int:
    """The HTTP status a refused handshake got (a close before accepting:
    the server answers the upgrade with 403)."""
    with pytest.raises(InvalidStatus) as refused:
        _connect(base, account).close()
    return refused.value.response.status_code


def _redis_now(events: redis.Redis) -> float:
    """Redis' clock, the one leases are scored on."""
    seconds, micros = events.time()
    return seconds + micros / 1_000_000


def _events(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    frames = [_frame(ws) for _ in range(count)]
    assert all(f["op"] == "event" for f in frames), frames
    return frames


def test_a_message_is_delivered_live_through_the_gateway(
    stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    with _connect(stack.gateway_url, account) as ws:
        _subscribe(ws, f"post:{post['id']}")
        _subscribe(ws, "user")
        ws.send(json.dumps({"op": "ping"}))
        assert _frame(ws) == {"op": "ack", "for": "ping"}
        message_id = _say(stack, account, post["id"], "live")
        frames = _events(ws, 2)
    by_channel = {f["channel"]: f for f in frames}
    assert set(by_channel) == {f"post:{post['id']}", "user"}
    event = by_channel[f"post:{post['id']}"]
    assert event["type"] == "message.created"
    assert event["data"]["message_id"] == message_id
    assert event["data"]["text"] == "live"
    # Enough to draw the message without asking anyone.
    assert event["data"]["sender_username"] == account.username
    assert event["data"]["sender_display_name"] == ""  # none chosen yet


def test_browsers_send_the_token_as_a_subprotocol_and_no_token_is_refused(
    stack: Endpoints, account: Account
) -> None:
    with connect(
        _ws_url(stack.gateway_url),
        subprotocols=["bearer", account.access_token],  # type: ignore[list-item]
        open_timeout=10,
    ) as ws:
        assert ws.subprotocol == "bearer"
        ws.send(json.dumps({"op": "ping"}))
        assert _frame(ws)["op"] == "ack"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        with pytest.raises(InvalidStatus):
            connect(_ws_url(stack.gateway_url), additional_headers=headers, open_timeout=10)


def test_every_spelling_of_a_post_id_is_the_one_canonical_channel(
    stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    post_id = uuid.UUID(post["id"])
    canonical = f"post:{post_id}"
    # The spellings REST accepts for the same post (social_common.ids).
    spellings = [str(post_id).upper(), post_id.hex, f"{{{post_id}}}", post_id.urn]
    for spelling in spellings:
        with _connect(stack.gateway_url, account) as ws:
            ws.send(json.dumps({"op": "subscribe", "channel": f"post:{spelling}"}))
            ack = _frame(ws)
            assert (ack["op"], ack["for"], ack["channel"]) == ("ack", "subscribe", canonical)
            message_id = _say(stack, account, post["id"], spelling)
            [event] = _events(ws, 1)
            assert (event["channel"], event["data"]["message_id"]) == (canonical, message_id)
            ws.send(json.dumps({"op": "unsubscribe", "channel": f"post:{spelling}"}))
            assert _frame(ws) == {"op": "ack", "for": "unsubscribe", "channel": canonical}
    with client(stack.gateway_url) as http:
        for spelling in spellings:
            assert http.get(f"/api/v1/posts/{spelling}").json()["id"] == post["id"]


def test_a_plain_request_for_the_socket_is_told_to_upgrade(stack: Endpoints) -> None:
    with client(stack.gateway_url) as http:
        through_gateway = http.get("/ws")
    assert through_gateway.status_code == 426
    assert through_gateway.json()["code"] == "upgrade_required"
    # The header that says which upgrade (Envoy drops it as hop-by-hop).
    direct = httpx.get(f"http://{stack.services_http['realtime']}/ws", trust_env=False)
    assert (direct.status_code, direct.headers["upgrade"]) == (426, "websocket")


def test_the_feed_brings_new_posts_of_whom_one_follows(stack: Endpoints, account: Account) -> None:
    author, stranger = create_account(stack.gateway_url), create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        followed = http.post(f"/api/v1/users/{author.username}/follow", headers=account.auth)
    assert followed.status_code in (200, 201, 204)
    with _connect(stack.gateway_url, account) as ws:
        _subscribe(ws, "feed")
        create_post(stack.gateway_url, stranger, "not followed")
        post = create_post(stack.gateway_url, author, "followed")
        [event] = _events(ws, 1)
    assert (event["channel"], event["type"]) == ("feed", "post.created")
    assert event["data"]["post_id"] == post["id"]


def test_limits_on_frames_and_channels(stack: Endpoints, account: Account) -> None:
    posts = [create_post(stack.gateway_url, account) for _ in range(3)]
    with _connect(stack.gateway_url, account) as ws:
        ws.send(json.dumps({"op": "ping", "pad": "x" * 5000}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    # The test stack allows three channels per connection.
    with _connect(stack.gateway_url, account) as ws:
        for post in posts:
            _subscribe(ws, f"post:{post['id']}")
        ws.send(json.dumps({"op": "subscribe", "channel": "user"}))
        assert _frame(ws)["code"] == "too_many_channels"


def test_only_existing_posts_and_ones_own_notifications(stack: Endpoints, account: Account) -> None:
    other = create_account(stack.gateway_url)
    with _connect(stack.gateway_url, account) as ws:
        for channel, code in (
            (f"post:{uuid7()}", "not_found"),
            (f"user:{other.id}", "invalid_channel"),
            ("everything", "invalid_channel"),
            ("post:", "invalid_channel"),
            (f"post:{uuid7()}x", "invalid_channel"),
        ):
            ws.send(json.dumps({"op": "subscribe", "channel": channel}))
            frame = _frame(ws)
            assert (frame["op"], frame["code"]) == ("error", code), channel
        ws.send(json.dumps({"op": "unsubscribe", "channel": ["feed"]}))
        assert _frame(ws)["code"] == "invalid_channel"
        ws.send("not json")
        assert _frame(ws)["code"] == "invalid_frame"


def test_reconnecting_with_since_gets_exactly_what_was_missed(
    stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    channel = f"post:{post['id']}"
    with _connect(stack.gateway_url, account) as ws:
        _subscribe(ws, channel)
        _say(stack, account, post["id"], "seen")
        [seen] = _events(ws, 1)
    missed = [_say(stack, account, post["id"], f"missed {i}") for i in range(3)]
    with _connect(stack.gateway_url, account) as ws:
        _subscribe(ws, channel, since=seen["id"])
        replayed = _events(ws, 3)
        assert [f["data"]["message_id"] for f in replayed] == missed
        ids = [seen["id"], *(f["id"] for f in replayed)]
        assert ids == sorted(ids, key=stream_position)
        after = _say(stack, account, post["id"], "live again")
        assert _events(ws, 1)[0]["data"]["message_id"] == after
        # Too far back: the server says so, and the client refetches over REST.
        ws.send(json.dumps({"op": "unsubscribe", "channel": channel}))
        assert _frame(ws)["for"] == "unsubscribe"
        ws.send(json.dumps({"op": "subscribe", "channel": channel, "since": "1-0"}))
        assert _frame(ws)["op"] == "ack"
        assert _frame(ws)["code"] == "gap"


def test_a_client_without_events_resumes_from_its_subscriptions_last(
    stack: Endpoints, account: Account
) -> None:
    """The ack's ``last`` is where a client that has had no event resumes:
    an empty channel's is 0-0 (everything kept), a busy one's its newest."""
    post = create_post(stack.gateway_url, account)
    channel = f"post:{post['id']}"
    with _connect(stack.gateway_url, account) as ws:
        assert _subscribe(ws, channel)["last"] == "0-0"
    missed = [_say(stack, account, post["id"], f"missed {i}") for i in range(2)]
    with _connect(stack.gateway_url, account) as ws:
        _subscribe(ws, channel, since="0-0")
        assert [f["data"]["message_id"] for f in _events(ws, 2)] == missed
    with _connect(stack.gateway_url, account) as ws:
        last = _subscribe(ws, channel)["last"]
    after = _say(stack, account, post["id"], "after")
    with _connect(stack.gateway_url, account) as ws:
        _subscribe(ws, channel, since=last)
        [replayed] = _events(ws, 1)
        assert replayed["data"]["message_id"] == after
        assert _pings(ws)


def _send_queue(stack_runner: Stack) -> int:
    """The frames the test stack's realtime queues for a client before it is too slow."""
    return int(stack_runner.service_env["realtime"]["REALTIME_SEND_QUEUE"])


def _small_buffer_socket(host: str, port: int) -> socket.socket:
    """A socket connected to ``host:port`` with a 4 KiB receive buffer: what
    its client leaves unread soon stops the sender."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    return sock


@contextlib.contextmanager
def _client_reading_nothing(
    host: str, port: int, account: Account, channel: str
) -> Iterator[socket.socket]:
    """A WebSocket client that subscribes and then reads nothing: a raw socket
    with a 4 KiB receive buffer, doing the handshake by hand."""
    sock = _small_buffer_socket(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {account.access_token}\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    payload = json.dumps({"op": "subscribe", "channel": channel}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    try:
        yield sock
    finally:
        sock.close()


class RealtimeProcess:
    """Another realtime process of the same stack, on ports of its own."""

    def __init__(self, stack: Endpoints, **settings: str) -> None:
        http_port, grpc_port = Ports.free().services["realtime"]
        self.env = {
            **os.environ,
            **stack.service_env("realtime"),
            "HTTP_PORT": str(http_port),
            "GRPC_PORT": str(grpc_port),
            "JWKS_CACHE_SECONDS": "1",
            **settings,
        }
        self.base = f"http://127.0.0.1:{http_port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "realtime"], env=self.env)
        wait_until(answers(f"{self.base}/readyz", 200), what="a second realtime process")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: a drain, as Kubernetes does it
            self.process.wait(timeout=30)
            self.process = None


@pytest.fixture
def second_realtime(stack: Endpoints) -> Iterator[RealtimeProcess]:
    process = RealtimeProcess(stack)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_heartbeats_find_a_dead_peer(
    stack: Endpoints, account: Account, events: redis.Redis
) -> None:
    # Pings every half second: a peer silent for as long again is dead.
    process = RealtimeProcess(stack, WS_PING_SECONDS="0.5")
    process.start()
    key = presence_key(account.id)
    try:
        host, port = process.base.removeprefix("http://").split(":")
        with (
            _connect(process.base, account) as alive,
            _client_reading_nothing(host, int(port), account, "user"),
        ):
            wait_until(lambda: events.zcard(key) == 2, what="both connections counted")
            # The silent one is closed (its place freed), the one answering
            # pings (the client library does) stays.
            wait_until(lambda: events.zcard(key) == 1, timeout=10, what="the dead peer cut off")
            assert _pings(alive)
    finally:
        process.stop()


def test_subscribers_on_two_processes_both_get_the_event(
    stack: Endpoints, account: Account, second_realtime: RealtimeProcess
) -> None:
    post = create_post(stack.gateway_url, account)
    channel = f"post:{post['id']}"
    with (
        _connect(stack.gateway_url, account) as first,
        _connect(second_realtime.base, account) as second,
    ):
        _subscribe(first, channel)
        _subscribe(second, channel)
        message_id = _say(stack, account, post["id"], "to both")
        [a], [b] = _events(first, 1), _events(second, 1)
    assert a == b
    assert a["data"]["message_id"] == message_id


def test_a_slow_client_is_cut_off_without_delaying_the_others(
    stack_runner: Stack, stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    channel = f"post:{post['id']}"
    # Straight to the service.
    host, port = stack.services_http["realtime"].split(":")
    with (
        _client_reading_nothing(host, int(port), account, channel) as slow,
        _connect(stack.gateway_url, account) as fast,
        create_sync_redis(stack.redis_url) as events,
    ):
        _subscribe(fast, channel)
        started = time.monotonic()
        _flood(stack_runner, events, account, post["id"], fast)
        took = time.monotonic() - started
        backlog = _backlog_until_cut(slow)
    assert len(backlog) < FLOOD_MESSAGES * len(FLOOD_TEXT)
    assert took < 30


def test_the_gateway_holds_little_for_a_client_that_reads_nothing(
    stack_runner: Stack, stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    channel = f"post:{post['id']}"
    host, port = stack.gateway_url.removeprefix("http://").split(":")
    with (
        _client_reading_nothing(host, int(port), account, channel) as slow,
        _connect(stack.gateway_url, account) as fast,
        create_sync_redis(stack.redis_url) as events,
    ):
        _subscribe(fast, channel)  # the slow one's subscription went first
        # Once the other has them all, the slow one has had its chance.
        _flood(stack_runner, events, account, post["id"], fast)
        backlog = _backlog_until_cut(slow)
    # What reached the client before its cut: the service's queue (32
    # frames here) and what the kernel and Envoy hold in between; megabytes
    # when Envoy buffered what its connection limits allow.
    assert len(backlog) < 512 * 1024, len(backlog)


def test_a_burst_on_a_channel_reaches_a_client_that_reads_promptly_whole(
    stack_runner: Stack, stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    # Ten send queues' worth, read by the service from Redis at once.
    count = 10 * _send_queue(stack_runner)
    with _connect(stack.gateway_url, account) as reader:
        _subscribe(reader, f"post:{post['id']}")
        asyncio.run(_route_in_bursts(stack, account, post["id"], count))
        assert len({f["id"] for f in _events(reader, count)}) == count


def test_a_client_back_with_since_gets_the_past_then_what_came_meanwhile_at_its_pace(
    stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    channel = f"post:{post['id']}"
    # Far more than the buffers between the service and a client hold (the
    # gateway's: under 512 KiB): the replay waits for the client to read.
    asyncio.run(_route_in_bursts(stack, account, post["id"], 800, "x" * 2000))
    host, port = stack.gateway_url.removeprefix("http://").split(":")
    small_buffer = _small_buffer_socket(host, int(port))
    with (
        _connect(stack.gateway_url, account, sock=small_buffer, max_queue=4) as back,
        _connect(stack.gateway_url, account) as live,
    ):
        _subscribe(back, channel, since=EMPTY)  # all the channel keeps
        _subscribe(live, channel)
        asyncio.run(_route_in_bursts(stack, account, post["id"], 100))
        # Once the other has them, they wait behind the replay for ``back``.
        came_meanwhile = [f["id"] for f in _events(live, 100)]
        got = [f["id"] for f in _events(back, 900)]
    assert got[800:] == came_meanwhile
    assert len(set(got)) == 900
    assert got == sorted(got, key=stream_position)


async def _route_in_bursts(
    stack: Endpoints, account: Account, post_id: str, count: int, text: str = "hi"
) -> None:
    """``count`` messages routed to the post's channel a hundred at once (as
    the realtime processes routing a busy post's events do; fewer than a
    client's connections to a node): Redis sends their publications to a
    subscriber in bursts."""
    client = create_redis(stack.redis_url)
    auth = grpc.aio.insecure_channel(stack.services_grpc["auth"])
    router = Router(client, auth, RealtimeSettings.from_env("realtime").retention)
    data = json.dumps({"text": text}).encode()
    try:
        for start in range(0, count, 100):
            await asyncio.gather(
                *(
                    router.route(_message(account, post_id, text), [f"post:{post_id}"], data)
                    for _ in range(start, min(count, start + 100))
                )
            )
    finally:
        await auth.close()
        await client.aclose()


def _message(account: Account, post_id: str, text: str) -> Envelope:
    """The event of a new message by ``account`` on its own post."""
    payload = MessageCreated(
        message_id=str(uuid7()),
        post_id=post_id,
        sender_id=account.id,
        text=text,
        post_author_id=account.id,
    )
    return make_envelope("messages", "message.created", post_id, payload)


# ~8 MB of frames: far more than the buffers between the service and a
# client that reads nothing.
FLOOD_MESSAGES, FLOOD_TEXT = 4000, "x" * 2000


def _flood(
    stack_runner: Stack,
    events: redis.Redis,
    account: Account,
    post_id: str,
    reader: ClientConnection,
) -> None:
    """Publishes FLOOD_MESSAGES on the post in rounds that ``reader`` takes
    in before the next: it never has more than half the service's send queue
    in flight, so only a client that reads nothing can be too slow, however
    long this busy machine keeps the reader from the CPU."""
    per_round = _send_queue(stack_runner) // 2
    received: set[str] = set()
    for _ in range(FLOOD_MESSAGES // per_round):
        _publish_messages(events, account, post_id, per_round, FLOOD_TEXT)
        received |= {f["id"] for f in _events(reader, per_round)}
    assert len(received) == FLOOD_MESSAGES // per_round * per_round


def _publish_messages(
    events: redis.Redis, account: Account, post_id: str, count: int, text: str
) -> None:
    """``count`` messages on the post, published as the messages service
    would, faster than its rate limit allows."""
    with events.pipeline(transaction=False) as pipe:
        for _ in range(count):
            envelope = _message(account, post_id, text)
            pipe.xadd(
                stream_for("message.created", post_id), {"envelope": envelope.SerializeToString()}
            )
        pipe.execute()


# What a client cut off for being too slow gets last: a close frame (0x88),
# code 1013 and the reason.
CUT_OFF_REASON = b"too slow: reconnect with since"
CUT_OFF_FRAME = bytes([0x88, 2 + len(CUT_OFF_REASON)]) + struct.pack(">H", 1013) + CUT_OFF_REASON


def _backlog_until_cut(slow: socket.socket) -> bytes:
    """What a client that read nothing finds once it reads: frames, and last
    the close frame (code 1013) it was cut off with for being too slow.
    Read up to that frame: the server waits for the client's close reply
    (which this one never sends) before it drops the connection."""
    slow.settimeout(30)
    backlog = b""
    while not backlog.endswith(CUT_OFF_FRAME):
        chunk = slow.recv(1 << 20)
        assert chunk, backlog[-64:]  # closed, and not with that frame last
        backlog += chunk
    return backlog


class ThousandMessages:
    """1,000 messages posted on one post by 20 users (60 a minute each), and
    what one subscriber receives of them, by event id in arrival order."""

    def __init__(self, stack: Endpoints, account: Account) -> None:
        self.stack = stack
        self.post = create_post(stack.gateway_url, account)
        self.channel = f"post:{self.post['id']}"
        self.senders = [create_account(stack.gateway_url) for _ in range(20)]
        self.received: dict[str, dict[str, Any]] = {}
        self.arrival: list[str] = []
        self._posting = ThreadPoolExecutor(1)
        self._posted: Future[None] | None = None

    def start(self) -> None:
        self._posted = self._posting.submit(self._post_all)

    def join(self) -> None:
        """Waits until all are posted (raises what posting raised)."""
        assert self._posted is not None
        self._posted.result()
        self._posting.shutdown()

    def _post_all(self) -> None:
        def send(i: int) -> None:
            # Until acknowledged: a 503 (a dependency restarting) is retried,
            # as a client would.
            with client(self.stack.gateway_url) as http:
                for _ in range(100):
                    sent = http.post(
                        f"/api/v1/posts/{self.post['id']}/messages",
                        headers=self.senders[i % 20].auth,
                        json={"message": f"m{i}"},
                    )
                    if sent.status_code != 503:
                        break
                    time.sleep(0.1)
            assert sent.status_code == 201, sent.text

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(send, range(1000)))

    @property
    def last_id(self) -> str | None:
        return self.arrival[-1] if self.arrival else None

    def listen(self, ws: ClientConnection, seconds: float) -> None:
        """Receives for ``seconds``, or until all 1,000 have come."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and len(self.received) < 1000:
            try:
                frame = _frame(ws, timeout=until - time.monotonic())
            except TimeoutError:
                return
            if frame["op"] == "event":
                self.arrival.append(frame["id"])
                self.received.setdefault(frame["id"], frame)

    def follow(
        self, base: str, account: Account, seconds: float, ws: ClientConnection | None = None
    ) -> None:
        """Listens (on ``ws``, else on a new socket from the last event
        received) for ``seconds`` or until all 1,000 have come, as a client
        does: when cut off for falling behind (1013), it reconnects with ``since``."""
        until = time.monotonic() + seconds
        while time.monotonic() < until and len(self.received) < 1000:
            try:
                if ws is not None:
                    self.listen(ws, until - time.monotonic())
                    continue
                with _connect(base, account) as fresh:
                    _subscribe(fresh, self.channel, since=self.last_id)
                    self.listen(fresh, until - time.monotonic())
            except ConnectionClosed as closed:
                if closed.rcvd is None or closed.rcvd.code != TRY_AGAIN_LATER:
                    raise
                ws = None

    def check_none_lost(self) -> None:
        """Every stored message arrived, once after de-duplication by event
        id, and in the channel's order: event ids only ever increase."""
        with client(self.stack.gateway_url) as http:
            stored: list[str] = []
            cursor = None
            while True:
                page = http.get(
                    f"/api/v1/posts/{self.post['id']}/messages",
                    params={"limit": 40, **({"cursor": cursor} if cursor else {})},
                ).json()
                stored += [m["id"] for m in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        assert len(stored) == 1000
        unique = list(dict.fromkeys(self.arrival))
        messages = [self.received[i]["data"]["message_id"] for i in unique]
        assert len(messages) == len(set(messages))
        assert set(messages) == set(stored), self.whereabouts(set(stored) - set(messages))
        positions = [stream_position(i) for i in unique]
        assert positions == sorted(positions)

    def whereabouts(self, missing: set[str]) -> str:
        """Where the events of messages a subscriber missed got to: how many
        are still in the messages service's outbox, on the message events'
        stream, on the channel's stream, and set aside as dead letters."""

        def created(envelopes: Iterable[bytes]) -> set[str]:
            return {
                MessageCreated.FromString(Envelope.FromString(envelope).payload).message_id
                for envelope in envelopes
            }

        with create_sync_redis(self.stack.redis_url) as events:
            stream = stream_for("message.created", self.post["id"])
            published = created(f[b"envelope"] for _, f in events.xrange(stream))
            routed = {
                json.loads(f[b"data"])["message_id"]
                for _, f in events.xrange(stream_key(self.channel))
            }
            dead_letters = events.xrange(dead_letters_of("message.created"))
            dead = created(f[b"envelope"] for _, f in dead_letters)
        with psycopg.connect(self.stack.database_admin_url) as db:
            rows = db.execute(
                "SELECT envelope FROM messages.outbox WHERE event_type = 'message.created'"
            ).fetchall()
        waiting = created(envelope for (envelope,) in rows)
        return (
            f"{len(missing)} missed: {len(missing & waiting)} in the outbox,"
            f" {len(missing & published)} on the events' stream,"
            f" {len(missing & routed)} on the channel's, {len(missing & dead)} dead letters"
        )


def test_a_realtime_restart_during_a_thousand_messages_loses_none(
    stack: Endpoints, account: Account, second_realtime: RealtimeProcess
) -> None:
    run = ThousandMessages(stack, account)
    close_codes: list[int | None] = []
    with _connect(second_realtime.base, account) as ws:
        _subscribe(ws, run.channel)
        run.start()
        run.listen(ws, 2.0)
        assert 0 < len(run.received) < 1000
        second_realtime.stop()  # SIGTERM mid-stream: sockets close with 1012
        try:
            while True:
                ws.recv(timeout=10)
        except ConnectionClosed as closed:
            close_codes.append(closed.rcvd.code if closed.rcvd else None)
    second_realtime.start()
    run.join()
    # Events a stopped process had read but not routed are routed by
    # another once their claim lapses (EventConsumer: 10 s).
    run.follow(second_realtime.base, account, 30.0)
    assert close_codes == [1012]
    run.check_none_lost()


@pytest.mark.skipif(
    redis_cluster_asked(os.environ),
    reason="one server restarting; a cluster's primary going away is the failover test's",
)
def test_a_redis_restart_during_a_thousand_messages_loses_none(
    stack: Endpoints, stack_runner: Stack, account: Account
) -> None:
    run = ThousandMessages(stack, account)
    with _connect(stack.gateway_url, account) as ws, create_sync_redis(stack.redis_url) as db:
        _subscribe(ws, run.channel)
        run.start()
        run.listen(ws, 2.0)
        assert 0 < len(run.received) < 1000
        before: Any = db.info("server")
        # Redis goes away mid-stream and comes back with its data (saved on
        # the way down: the test stack's Redis keeps nothing otherwise), as a
        # Redis with an append-only file does.
        with contextlib.suppress(redis.ConnectionError):
            db.shutdown(save=True)
        stack_runner.restart("redis")
        after: Any = db.info("server")
        assert after["run_id"] != before["run_id"]
        # The socket stays open: the process re-subscribes and replays what
        # its channels got meanwhile (a socket cut for falling behind the
        # replay reconnects, as clients do).
        run.join()
        run.follow(stack.gateway_url, account, 30.0, ws)
    run.check_none_lost()


def _primary_of(redis_url: str, key: str) -> str:
    """The address of the cluster's primary that serves ``key``, as the cluster says now."""

    async def ask() -> str:
        client = create_redis(redis_url)
        try:
            return await node_of(client, key)
        finally:
            await client.aclose()

    return asyncio.run(ask())


class FanOfFourAuthors:
    """Four authors followed by one fan whose timeline lives away from the
    ``avoided`` primary (each author below the stack's celebrity threshold:
    their posts are fanned out on write), and five images each to post."""

    def __init__(self, stack: Endpoints, avoided: str) -> None:
        self.stack = stack
        self.fan = create_account(stack.gateway_url)
        while _primary_of(stack.redis_url, timeline_key(self.fan.id)) == avoided:
            self.fan = create_account(stack.gateway_url)
        self.authors = [create_account(stack.gateway_url) for _ in range(4)]
        with client(stack.gateway_url) as http:
            for author in self.authors:
                path = f"/api/v1/users/{author.username}/follow"
                assert http.post(path, headers=self.fan.auth).status_code in (200, 201, 204)
        self.images = [
            (author, upload_image(stack.gateway_url, author)["id"])
            for author in self.authors
            for _ in range(5)
        ]

    def post_all(self) -> list[str]:
        """Posts every image (a 503 retried, as a client would); the posts' ids."""
        posted = []
        with client(self.stack.gateway_url) as http:
            for author, media_id in self.images:
                for _ in range(100):
                    sent = http.post(
                        "/api/v1/posts",
                        headers=author.auth,
                        json={"caption": "during a failover", "media_ids": [media_id]},
                    )
                    if sent.status_code != 503:
                        break
                    time.sleep(0.1)
                assert sent.status_code == 201, sent.text
                posted.append(sent.json()["id"])
        return posted

    def in_feed(self, posted: list[str]) -> bool:
        with client(self.stack.gateway_url) as http:
            page = http.get("/api/v1/feed", params={"limit": 40}, headers=self.fan.auth)
        return page.status_code == 200 and set(posted) <= {p["id"] for p in page.json()["items"]}


@pytest.mark.skipif(
    not redis_cluster_asked(os.environ), reason="a Redis Cluster's failover (make test-cluster)"
)
def test_a_primary_failing_over_during_a_thousand_messages_loses_none(
    stack: Endpoints, stack_runner: Stack, account: Account
) -> None:
    """The primary that holds the message events' stream is killed while
    messages are posted, holding events its replica does not have (frozen,
    its link cut) and no consumer has read (realtime is down meanwhile): the
    replica takes over, every client finds it by itself, and every
    acknowledged message is delivered (the outbox relay lets an event go only
    once a replica has it). Posts are written meanwhile, their events
    spread over every shard: a fan's feed shows each one acknowledged."""

    # The post's channel on another shard than its events: its routing
    # records outlive the failover, so no event reaches the subscriber twice
    # under two ids.
    while True:
        run = ThousandMessages(stack, account)
        stream = stream_for("message.created", run.post["id"])
        primary = _primary_of(stack.redis_url, stream)
        survivor = _primary_of(stack.redis_url, stream_key(run.channel))
        if survivor != primary:
            break
    # Asked through a primary that stays up: the stack's URL may name the one killed.
    surviving_url = f"redis://{survivor}/0?cluster=true"

    def taken_over() -> bool:
        try:
            return _primary_of(surviving_url, stream) != primary
        except UNAVAILABLE:
            # A new client asks a primary of its choice for the commands'
            # table, perhaps the dead one: it cannot start until the map moves.
            return False

    posts = FanOfFourAuthors(stack, primary)
    posting = ThreadPoolExecutor(1)
    by_address = {c.probe.address: c for c in stack_runner.components}
    with create_sync_redis(f"redis://{primary}/0") as node:
        replica = by_address[f"127.0.0.1:{node.info('replication')['slave0']['port']}"]
        with _connect(stack.gateway_url, account) as ws:
            _subscribe(ws, run.channel)
            run.start()
            run.listen(ws, 2.0)
            assert 0 < len(run.received) < 1000
        with stack_runner.stopped("realtime"):
            # What the primary had sent is in the replica's socket already:
            # frozen, its link cut, it has nothing written from now on.
            os.kill(replica.pid, signal.SIGSTOP)
            posted = posting.submit(posts.post_all)
            try:
                node.client_kill_filter(_type="replica")
                written = node.xlen(stream)
                wait_until(lambda: node.xlen(stream) > written, what="events the replica lacks")
                with stack_runner.stopped(by_address[primary].name, crash=True):
                    os.kill(replica.pid, signal.SIGCONT)
                    wait_until(
                        taken_over,
                        timeout=30,
                        what="the replica taking over",
                    )
            finally:
                os.kill(replica.pid, signal.SIGCONT)
        # Started again, the old primary follows the new one.
        run.join()
        run.follow(stack.gateway_url, account, 60.0)
    run.check_none_lost()
    acknowledged = posted.result()
    posting.shutdown()
    wait_until(lambda: posts.in_feed(acknowledged), timeout=30, what="every post in the feed")


@pytest.mark.skipif(
    not redis_cluster_asked(os.environ), reason="a Redis Cluster's slot moving (make test-cluster)"
)
def test_slots_moving_to_other_primaries_during_a_thousand_messages_lose_none(
    stack: Endpoints, account: Account
) -> None:
    """The slots of a post's message events' stream (with its consumer
    groups) and of its channel (its stream, routing records and sharded
    pub/sub channel) move to other primaries while messages are posted: the
    relay and the consumers follow the events, the subscriber's socket stays
    open, and the realtime process follows the channel there (the old primary
    unsubscribes it) and replays what it missed."""
    run = ThousandMessages(stack, account)
    primaries = list(primaries_info(stack.redis_url, "server"))
    moves = {}  # slot: (from, to, a key in it)
    for key in (stream_for("message.created", run.post["id"]), stream_key(run.channel)):
        source = _primary_of(stack.redis_url, key)
        target = primaries[(primaries.index(source) + 1) % len(primaries)]
        moves[key_slot(key.encode())] = (source, target, key)
    with _connect(stack.gateway_url, account) as ws:
        _subscribe(ws, run.channel)
        run.start()
        run.listen(ws, 2.0)
        assert 0 < len(run.received) < 1000
        for slot, (source, target, key) in moves.items():
            move_slot(slot, source, target)
            assert _primary_of(stack.redis_url, key) == target
        run.join()
        run.follow(stack.gateway_url, account, 30.0, ws)
    run.check_none_lost()
    for slot, (source, target, _) in moves.items():
        move_slot(slot, target, source)  # the cluster as the other tests know it


# -- connections per user, across processes


def test_the_limit_holds_across_processes(
    stack: Endpoints, account: Account, events: redis.Redis, second_realtime: RealtimeProcess
) -> None:
    key = presence_key(account.id)
    # The user's places, spread over the gateway's process and the second one.
    bases = [stack.gateway_url if i % 2 else second_realtime.base for i in range(LIMIT)]
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(_connect(base, account)) for base in bases]
        assert events.zcard(key) == LIMIT
        # One more is refused on either process, before the handshake completes.
        assert _refused(stack.gateway_url, account) == 403
        assert _refused(second_realtime.base, account) == 403
        assert all(_pings(ws) for ws in sockets)
        # A place freed on the gateway's process is taken on the other one.
        sockets[1].close()
        wait_until(lambda: events.zcard(key) < LIMIT, what="the closed socket's lease released")
        with _connect(second_realtime.base, account) as ws:
            assert _pings(ws)
            assert events.zcard(key) == LIMIT
            assert _refused(stack.gateway_url, account) == 403
        # All at once: through Envoy, a client's close takes about a second.
        with ThreadPoolExecutor(len(sockets)) as pool:
            list(pool.map(ClientConnection.close, sockets))
    wait_until(lambda: events.zcard(key) == 0, what="every lease released")


def test_leases_of_a_dead_process_do_not_count_those_of_a_live_one_do(
    stack: Endpoints, account: Account, events: redis.Redis
) -> None:
    key = presence_key(account.id)
    now = _redis_now(events)
    # A process that died holding all the user's places: its leases lapsed.
    events.zadd(key, {f"dead-{i}": now - 1 for i in range(LIMIT)})
    with _connect(stack.gateway_url, account) as first:
        assert _pings(first)
        assert events.zcard(key) == 1  # the lapsed leases were swept
        # A live process holds all the places but one more.
        live = {f"live-{i}": now + LEASE_SECONDS for i in range(LIMIT - 2)}
        events.zadd(key, live)
        try:
            with _connect(stack.gateway_url, account) as second:
                assert _pings(second)
                assert _refused(stack.gateway_url, account) == 403
        finally:
            events.zrem(key, *live)


class _AnyoneVerifier:
    """Takes every token as a new user's."""

    async def verify(self, token: str) -> AccessClaims:
        return AccessClaims(
            subject=str(uuid.uuid4()),
            token_id="t",
            session_id="s",
            issued_at=0,
            expires_at=0,
            raw={},
        )


def test_a_connection_that_cannot_be_counted_is_told_to_try_again_later() -> None:
    """Without Redis nothing can be delivered either: the socket is accepted
    only to be closed with 1013, which browsers see and retry after."""

    async def closed_with(port: int) -> tuple[int, str]:
        # Refused at once, and not retried.
        unreachable = aioredis.Redis(port=port, retry=Retry(NoBackoff(), 0))
        # (A gRPC channel needs an event loop to be made in: this one.)
        posts = grpc.aio.insecure_channel(f"127.0.0.1:{port}")  # never called
        endpoint = RealtimeEndpoint(
            Hub(unreachable),
            unreachable,
            cast(TokenVerifier, _AnyoneVerifier()),
            posts,
            RealtimeSettings(service="realtime"),
            Presence(unreachable, RealtimeSettings(service="realtime").max_connections_per_user),
        )
        app = Starlette(routes=[WebSocketRoute("/ws", endpoint.handle)])
        # The app runs on the test client's own thread and loop.
        with (
            TestClient(app) as http,
            http.websocket_connect("/ws", headers={"Authorization": "Bearer t"}) as ws,
            pytest.raises(WebSocketDisconnect) as closed,
        ):
            ws.receive_text()
        await posts.close()
        return closed.value.code, closed.value.reason

    with socket.socket() as closed_port:
        closed_port.bind(("127.0.0.1", 0))  # bound, never listening: refused
        code = asyncio.run(closed_with(closed_port.getsockname()[1]))
    assert code == (1013, "try again later")


def test_renewal_pushes_a_live_lease_a_lease_ahead(stack: Endpoints, events: redis.Redis) -> None:
    user_id = str(uuid.uuid4())
    key = presence_key(user_id)

    async def renewed() -> None:
        connection = create_redis(stack.redis_url)
        try:
            presence = Presence(connection, limit=2)
            lease = await presence.acquire(user_id)
            assert lease is not None
            # As if the last renewal were long ago: a second of the lease left.
            await connection.zadd(key, {lease: _redis_now(events) + 1})
            await presence.renew()
            renewed = await connection.zscore(key, lease)
            assert renewed is not None
            assert renewed > _redis_now(events) + LEASE_SECONDS - 5
            # A lease swept meanwhile (as after its release elsewhere) is
            # not brought back by a renewal (XX); the other one is renewed.
            other = await presence.acquire(user_id)
            assert other is not None
            await connection.zrem(key, lease)
            await presence.renew()
            assert await connection.zscore(key, lease) is None
            assert await connection.zscore(key, other) is not None
        finally:
            await connection.aclose()

    asyncio.run(renewed())


def test_since_an_event_trimmed_from_the_stream_is_a_gap_and_one_kept_is_not(
    stack: Endpoints, account: Account, events: redis.Redis
) -> None:
    post = create_post(stack.gateway_url, account)
    channel = f"post:{post['id']}"
    key = stream_key(channel)
    # Entries as the router writes them, then trimmed exactly (the router's
    # MAXLEN ~ trims only whole radix-tree nodes, so not reliably this small).
    written, kept = 30, 10
    with events.pipeline(transaction=False) as pipe:
        for n in range(written):
            pipe.xadd(key, {"type": "message.created", "data": json.dumps({"n": n})})
        ids = [as_text(i) for i in pipe.execute()]
    assert events.xtrim(key, maxlen=kept, approximate=False) == written - kept
    entries: Any = events.xrange(key)
    assert [as_text(i) for i, _ in entries] == ids[-kept:]
    # The newest trimmed: only one event, and the very last lost, is missing.
    trimmed, first_kept = ids[-kept - 1], ids[-kept]
    with _connect(stack.gateway_url, account) as lost, _connect(stack.gateway_url, account) as ok:
        _subscribe(lost, channel, since=trimmed)
        gap = _frame(lost)
        assert (gap["op"], gap["code"], gap["channel"]) == ("error", "gap", channel)
        _subscribe(ok, channel, since=first_kept)
        replayed = [_frame(ok) for _ in range(kept - 1)]
        assert [(f["op"], f["channel"], f["id"]) for f in replayed] == [
            ("event", channel, i) for i in ids[-kept + 1 :]
        ]
        assert [f["data"]["n"] for f in replayed] == list(range(written - kept + 1, written))
        # Both are live now: the next frame of either is the new event (no
        # replay after the gap, no gap after the replay).
        message_id = _say(stack, account, post["id"], "live")
        for ws in (lost, ok):
            frame = _frame(ws)
            assert (frame["op"], frame["channel"]) == ("event", channel)
            assert frame["data"]["message_id"] == message_id

"""The realtime scenarios of `make bench` (issue 6): WebSockets held, and
how long a message takes from being posted to reaching its watchers.

  ws_sockets  BENCH_WS_SOCKETS sockets held at once on the one realtime
              process, opened by an asyncio client on the ``websockets``
              library (this process), each subscribed to its user's
              notifications and to one post. Measured: the realtime
              process's resident memory before and with them all held
              (bytes per socket), the client's own, how fast they opened,
              and then one message posted on that post: how long until
              every socket has it (fan-out). Through the gateway when Envoy
              may hold two descriptors per socket (its downstream and
              upstream), else straight to the service (on this machine the
              hard limit, 20,000 per process, cannot be raised without
              CAP_SYS_RESOURCE): the row says which.
  ws_latency  k6 (k6_ws_latency.js), through the gateway: BENCH_WS_CHANNELS
              posts with BENCH_WS_SUBSCRIBERS sockets each, then
              BENCH_WS_RATE messages/s posted over REST, spread over the
              posts and the dataset's users. Each message carries the time
              it was sent; every delivery of a message sent in the measured
              window adds now - sent to the latency. Goal: p95 <= 100 ms.

Both use the social dataset's users (dataset.py) and posts made for the
run from writers' pools, deleted after it with their messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
from messages.settings import MessagesSettings
from realtime.settings import RealtimeSettings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from . import generators, observe, stackapi
from .model import Settings

HERE = Path(__file__).resolve().parent
K6_SCRIPT = HERE / "k6_ws_latency.js"
WS_PATH = "/ws"
# Sockets opening at once (each: a handshake, a token check, two subscriptions).
OPENING = 64
# Descriptors Envoy needs besides two per socket (listeners, pools, admin).
ENVOY_SPARE_FILES = 1_000
# How long the fan-out of one message may take before it counts as lost.
FANOUT_TIMEOUT_S = 60.0
# k6 subscribers get this long to connect before messages start, and
# deliveries this long to arrive after the last message is sent.
CONNECT_S = 10
DRAIN_S = 5
# Messages a user may send in the limit's burst (60/min, burst 60).
MESSAGES_BURST = MessagesSettings.send_rate.limit
LATENCY_GOAL_P95_MS = 100.0


@dataclass(frozen=True)
class WsPlan:
    """What preparation made for the realtime scenarios: the access tokens of
    the dataset's users, and the posts whose channels are watched."""

    tokens: Sequence[str]
    posts: Sequence[str]


@dataclass
class _Held:
    """The sockets open at once, and when each got the fan-out message."""

    sockets: list[ClientConnection] = field(default_factory=list)
    readers: list[asyncio.Task[None]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    refused: int = 0
    # Sockets still open when the message is sent: arrivals awaited.
    expected: int = 0
    everyone: asyncio.Event = field(default_factory=asyncio.Event)


def ws_url(http_url: str) -> str:
    parts = urllib.parse.urlsplit(http_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urllib.parse.urlunsplit((scheme, parts.netloc, WS_PATH, "", ""))


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile of ``values`` (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


# --------------------------------------------------------------------------- ws_sockets


async def _subscribe(socket: ClientConnection, channel: str) -> None:
    await socket.send(msgspec.json.encode({"op": "subscribe", "channel": channel}).decode())
    reply = msgspec.json.decode(await socket.recv())
    if reply.get("op") != "ack":
        raise WebSocketException(f"subscribing to {channel}: {reply}")


async def _open(url: str, token: str, channel: str, held: _Held) -> None:
    """One socket, subscribed to ``user`` and ``channel``, then read until
    closed; each event on ``channel`` is recorded as an arrival."""
    try:
        socket = await connect(
            url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=60
        )
        await _subscribe(socket, "user")
        await _subscribe(socket, channel)
    except (OSError, TimeoutError, WebSocketException):
        held.refused += 1
        return
    held.sockets.append(socket)

    async def read() -> None:
        with contextlib.suppress(WebSocketException):
            async for frame in socket:
                event = msgspec.json.decode(frame)
                if event.get("op") == "event" and event.get("channel") == channel:
                    held.arrivals.append(time.perf_counter())
                    if len(held.arrivals) >= held.expected:
                        held.everyone.set()

    held.readers.append(asyncio.create_task(read()))


async def _hold(
    settings: Settings,
    plan: WsPlan,
    url: str,
    realtime: observe.ServiceProcess,
    envoy_pid: int | None,
) -> dict[str, Any]:
    count, channel = settings.ws_sockets, f"post:{plan.posts[0]}"
    gc.collect()
    pids = {"realtime": realtime.pid, "client": os.getpid()}
    if envoy_pid is not None:
        pids["envoy"] = envoy_pid
    before = {name: observe.resident_bytes(pid) for name, pid in pids.items()}
    held = _Held()
    opening = asyncio.Semaphore(OPENING)

    async def open_one(n: int) -> None:
        async with opening:
            await _open(url, plan.tokens[n % len(plan.tokens)], channel, held)

    started = time.perf_counter()
    await asyncio.gather(*(open_one(n) for n in range(count)))
    open_s = time.perf_counter() - started
    opened = len(held.sockets)
    print(f"bench: ws_sockets: {opened} open in {open_s:.1f}s; holding", file=sys.stderr)
    await asyncio.sleep(settings.duration_s)
    gc.collect()
    after = {name: observe.resident_bytes(pid) for name, pid in pids.items()}
    dropped = sum(reader.done() for reader in held.readers)
    held.expected = opened - dropped
    # One message on the post they all watch: how long until each has it.
    sent_at = time.perf_counter()
    await asyncio.to_thread(
        stackapi.post_message, settings, plan.tokens[0], plan.posts[0], "bench fan-out"
    )
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(held.everyone.wait(), FANOUT_TIMEOUT_S)
    fanout_ms = [(at - sent_at) * 1000 for at in held.arrivals]
    closing = asyncio.Semaphore(OPENING * 4)

    async def close(socket: ClientConnection) -> None:
        async with closing:
            await socket.close()

    await asyncio.gather(*(close(s) for s in held.sockets), return_exceptions=True)
    await asyncio.gather(*held.readers, return_exceptions=True)
    row: dict[str, Any] = {
        "scenario": "ws_sockets",
        "generator": "websockets (asyncio)",
        "via": "gateway" if url.startswith(ws_url(settings.base_url)) else "service",
        "sockets": opened,
        "refused": held.refused,
        "open_s": round(open_s, 2),
        "opened_per_s": round(opened / open_s, 1) if open_s else 0.0,
        "held_s": settings.duration_s,
        "dropped_while_held": dropped,
        "realtime_rss_before_mib": round(before["realtime"] / 2**20, 1),
        "realtime_rss_mib": round(after["realtime"] / 2**20, 1),
        "fanout_delivered": len(fanout_ms),
        "fanout_p50_ms": round(percentile(fanout_ms, 0.50), 1),
        "fanout_p99_ms": round(percentile(fanout_ms, 0.99), 1),
        "fanout_max_ms": round(max(fanout_ms, default=0.0), 1),
    }
    for name in pids:
        grown = after[name] - before[name]
        row[f"{name}_bytes_per_socket"] = round(grown / held.expected) if held.expected else 0
    return row


def sockets_scenario(
    settings: Settings, plan: WsPlan, realtime: observe.ServiceProcess, envoy_pid: int | None
) -> dict[str, Any]:
    """ws_sockets: the row of one run (see the module's docstring)."""
    per_user = math.ceil(settings.ws_sockets / len(plan.tokens))
    if per_user > RealtimeSettings.max_connections_per_user:
        raise stackapi.BenchError(
            f"ws_sockets: {per_user} sockets per user, over the realtime service's limit "
            f"({RealtimeSettings.max_connections_per_user}): lower BENCH_WS_SOCKETS or raise "
            "BENCH_SOCIAL_USERS"
        )
    needed = 2 * settings.ws_sockets + ENVOY_SPARE_FILES
    if envoy_pid is not None and observe.open_files_limit(envoy_pid) >= needed:
        url = ws_url(settings.base_url)
    else:
        print(
            f"bench: ws_sockets: Envoy may not hold {needed} descriptors: straight to "
            f"the realtime service at {realtime.address}",
            file=sys.stderr,
        )
        url, envoy_pid = ws_url(f"http://{realtime.address}"), None
    return asyncio.run(_hold(settings, plan, url, realtime, envoy_pid))


# --------------------------------------------------------------------------- ws_latency


def latency_scenario(settings: Settings, plan: WsPlan) -> dict[str, Any]:
    """ws_latency: the row of one k6 run (see the module's docstring)."""
    per_user = settings.ws_rate * (settings.warmup_s + settings.duration_s) / len(plan.tokens)
    if per_user > MESSAGES_BURST:
        raise stackapi.BenchError(
            f"ws_latency: {per_user:.0f} messages per user, over the limit's burst "
            f"({MESSAGES_BURST}): lower BENCH_WS_RATE or raise BENCH_SOCIAL_USERS"
        )
    with tempfile.TemporaryDirectory(prefix="bench-ws-") as tmp:
        data_file = Path(tmp) / "ws.json"
        data_file.write_text(json.dumps({"tokens": list(plan.tokens), "posts": list(plan.posts)}))
        variables = {
            "BENCH_BASE_URL": settings.base_url,
            "BENCH_WS_URL": ws_url(settings.base_url),
            "BENCH_WS_FILE": str(data_file),
            "BENCH_WS_SUBSCRIBERS": str(settings.ws_subscribers),
            "BENCH_WS_RATE": str(settings.ws_rate),
            "BENCH_CONNECT_S": str(CONNECT_S),
            "BENCH_WARMUP_S": str(settings.warmup_s),
            "BENCH_DURATION_S": str(settings.duration_s),
            "BENCH_DRAIN_S": str(DRAIN_S),
        }
        limit_s = CONNECT_S + settings.warmup_s + settings.duration_s + DRAIN_S + 120
        cpu_before = {**observe.cpu_seconds(), "k6": observe.generator_cpu_seconds()}
        started = time.monotonic()
        done = generators.run_k6(K6_SCRIPT, variables, limit_s)
        cpu_after = {**observe.cpu_seconds(), "k6": observe.generator_cpu_seconds()}
        elapsed = time.monotonic() - started
    metrics = done.metrics()
    row = _latency_row(settings, plan, metrics, done.peak_rss_bytes)
    # What each component spent per message posted (warm-up included): the
    # REST call, the outbox, the consumers, the fan-out to the sockets.
    row["cpu"] = observe.cpu_per_request(
        cpu_before, cpu_after, generators.counter(metrics, "bench_posted"), elapsed
    )
    return row


def _trend(metrics: dict[str, Any], name: str, stat: str) -> float:
    return round(float(metrics.get(name, {}).get("values", {}).get(stat, 0.0)), 1)


def _latency_row(
    settings: Settings, plan: WsPlan, metrics: dict[str, Any], k6_peak: int
) -> dict[str, Any]:
    count = partial(generators.counter, metrics)
    sockets = len(plan.posts) * settings.ws_subscribers
    sent, delivered = count("bench_sent"), count("bench_delivered")
    expected = sent * settings.ws_subscribers
    p95 = _trend(metrics, "bench_delivery_ms", "p(95)")
    missed = []
    if p95 > LATENCY_GOAL_P95_MS:
        missed.append(f"p95 {p95} ms")
    if delivered < expected:
        missed.append(f"{expected - delivered} deliveries missing")
    return {
        "scenario": "ws_latency",
        "generator": "k6",
        "via": "gateway",
        "channels": len(plan.posts),
        "subscribers_per_channel": settings.ws_subscribers,
        "sockets": sockets,
        "subscribed": count("bench_subscribed"),
        "target_messages_per_s": settings.ws_rate,
        # All of the measured window's: sent, not sent (k6 out of VUs), failed.
        "messages_per_s": round(sent / settings.duration_s, 1),
        "messages": sent,
        "not_sent": count("dropped_iterations{scenario:measure}"),
        "send_failed": count("bench_send_failed"),
        "send_p50_ms": _trend(metrics, "bench_send_ms", "p(50)"),
        "send_p95_ms": _trend(metrics, "bench_send_ms", "p(95)"),
        "deliveries": delivered,
        "expected_deliveries": expected,
        "deliveries_per_s": round(delivered / settings.duration_s, 1),
        "delivery_p50_ms": _trend(metrics, "bench_delivery_ms", "p(50)"),
        "delivery_p95_ms": p95,
        "delivery_p99_ms": _trend(metrics, "bench_delivery_ms", "p(99)"),
        "delivery_max_ms": _trend(metrics, "bench_delivery_ms", "max"),
        "socket_errors": count("bench_socket_errors"),
        "k6_peak_rss_mib": round(k6_peak / 2**20, 1),
        "goal": {"p95_ms": LATENCY_GOAL_P95_MS, "met": not missed, "missed": missed},
    }


def describe(row: dict[str, Any]) -> str:
    """A row as the lines report.py prints."""
    if row["scenario"] == "ws_sockets":
        per_socket = ", ".join(
            f"{name} {row[f'{name}_bytes_per_socket'] / 1024:.1f} KiB"
            for name in ("realtime", "envoy", "client")
            if f"{name}_bytes_per_socket" in row
        )
        return (
            f"ws_sockets ({row['generator']}, via {row['via']}): {row['sockets']:,} sockets "
            f"open in {row['open_s']} s ({row['opened_per_s']:,.0f}/s), {row['refused']} "
            f"refused, {row['dropped_while_held']} dropped while held {row['held_s']} s\n"
            f"  memory per socket: {per_socket} (realtime RSS "
            f"{row['realtime_rss_before_mib']} -> {row['realtime_rss_mib']} MiB)\n"
            f"  one message to all: {row['fanout_delivered']:,} delivered, p50 "
            f"{row['fanout_p50_ms']} ms, p99 {row['fanout_p99_ms']} ms, "
            f"max {row['fanout_max_ms']} ms"
        )
    goal = row["goal"]
    verdict = "met" if goal["met"] else "NOT met: " + ", ".join(goal["missed"])
    return (
        f"ws_latency (k6, via {row['via']}): {row['channels']} posts x "
        f"{row['subscribers_per_channel']} sockets ({row['subscribed']} subscribed); "
        f"{row['messages_per_s']:,.0f} messages/s sent of {row['target_messages_per_s']:,} "
        f"asked ({row['not_sent']} not sent, {row['send_failed']} failed; send p50 "
        f"{row['send_p50_ms']} ms, p95 {row['send_p95_ms']} ms)\n"
        f"  delivered {row['deliveries']:,} of {row['expected_deliveries']:,} "
        f"({row['deliveries_per_s']:,.0f}/s): p50 {row['delivery_p50_ms']} ms, p95 "
        f"{row['delivery_p95_ms']} ms, p99 {row['delivery_p99_ms']} ms, max "
        f"{row['delivery_max_ms']} ms; goal p95 <= {goal['p95_ms']:g} ms: {verdict}\n"
        f"  k6 peak RSS {row['k6_peak_rss_mib']} MiB\n"
        f"  cpu per message: {observe.format_cpu(row.get('cpu', {}))}"
    )

"""The settings of a run, read from the environment and checked.

Settings come from the environment (defaults in brackets):
  BENCH_BASE_URL        [http://127.0.0.1:8000]  must be a loopback host
  BENCH_DURATION        [10]      seconds measured per (scenario, generator)
  BENCH_WARMUP          [2]       seconds of unrecorded load before each measure
  BENCH_CONNECTIONS     [64]      wrk connections, k6 VUs (scenarios may override)
  BENCH_THREADS         [2]       wrk threads
  BENCH_SCENARIOS       [all]     comma list of scenario names
  BENCH_GENERATORS      [wrk,k6]  comma list of generators
  BENCH_ACCOUNTS        [300]     accounts registered for the login scenario
  BENCH_LOGIN_MAX_RPS   [100]     logins/s the login scenario budgets for
  BENCH_UPLOAD_MAX_RPS  [20]      uploads/s the upload scenarios budget for
  BENCH_SOCIAL_USERS    [1000]    users of the social dataset (at most 1014)
  BENCH_SOCIAL_FOLLOWS  [20]      users each user follows
  BENCH_COMPOSE_MAX_RPS [400]     posts/s the create_post scenario budgets for
  BENCH_MIX_MAX_RPS     [2000]    requests/s the dsb_mix scenario budgets for
  BENCH_PROFILE         [0]       1: py-spy profiles global_feed and dsb_mix
  BENCH_WS_SOCKETS      [10000]   sockets the ws_sockets scenario holds at once
  BENCH_WS_CHANNELS     [100]     posts the ws_latency scenario's sockets watch
  BENCH_WS_SUBSCRIBERS  [10]      sockets per post in ws_latency
  BENCH_WS_RATE         [1000]    messages/s ws_latency posts
  BENCH_WEB_LOADS       [10]      page loads web_paint times, cold and warm each
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Mapping

from .model import GENERATOR_NAMES, WEB_SCENARIOS, WS_SCENARIOS, Settings
from .plans import MAX_ACCOUNTS, MAX_SOCIAL_USERS
from .scenarios import SCENARIOS
from .stackapi import BenchError


def check_loopback(url: str) -> str:
    """Return ``url`` without a trailing slash, or raise if its host is not loopback.

    Nothing is sent to the host: ``localhost`` is only resolved, to catch an
    /etc/hosts that points it elsewhere.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BenchError(f"BENCH_BASE_URL must be http:// or https://, got {url!r}")
    host = parts.hostname
    if not host:
        raise BenchError(f"BENCH_BASE_URL has no host: {url!r}")
    if host == "localhost":
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise BenchError(f"cannot resolve localhost: {exc}") from exc
        addresses = {info[4][0] for info in infos}
    else:
        addresses = {host}
    for address in addresses:
        try:
            loopback = ipaddress.ip_address(address).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise BenchError(
                f"refusing BENCH_BASE_URL {url!r}: the harness only loads loopback hosts "
                "(127.0.0.0/8, localhost, ::1)"
            )
    return url.rstrip("/")


def _int_setting(
    env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BenchError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise BenchError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise BenchError(f"{name} must be <= {maximum}, got {value}")
    return value


def _list_setting(
    env: Mapping[str, str], name: str, default: tuple[str, ...], known: tuple[str, ...]
) -> tuple[str, ...]:
    raw = env.get(name, "").strip()
    if not raw or raw == "all":
        return default
    chosen = tuple(dict.fromkeys(item.strip() for item in raw.split(",") if item.strip()))
    unknown = [item for item in chosen if item not in known]
    if unknown or not chosen:
        raise BenchError(f"{name}: unknown {unknown or raw!r}; known: {', '.join(known)}")
    return chosen


def load_settings(env: Mapping[str, str]) -> Settings:
    """Read and validate the BENCH_* settings."""
    scenario_names = tuple(s.name for s in SCENARIOS) + WS_SCENARIOS + WEB_SCENARIOS
    settings = Settings(
        base_url=check_loopback(env.get("BENCH_BASE_URL", "").strip() or "http://127.0.0.1:8000"),
        duration_s=_int_setting(env, "BENCH_DURATION", 10, 1),
        warmup_s=_int_setting(env, "BENCH_WARMUP", 2, 0),
        connections=_int_setting(env, "BENCH_CONNECTIONS", 64, 1),
        threads=_int_setting(env, "BENCH_THREADS", 2, 1),
        scenarios=_list_setting(env, "BENCH_SCENARIOS", scenario_names, scenario_names),
        generators=_list_setting(env, "BENCH_GENERATORS", GENERATOR_NAMES, GENERATOR_NAMES),
        # 300 covers the default 2 s warm-up + 10 s measured with room to spare:
        # plan_login() needs 44 + 216 = 260 accounts then (worked out there).
        accounts=_int_setting(env, "BENCH_ACCOUNTS", 300, 1, MAX_ACCOUNTS),
        # 2 argon2 workers at ~20 ms a hash: about 100 logins/s at most on this
        # box (it does ~75 with the gateway and k6 on the same 2 cores).
        login_max_rps=_int_setting(env, "BENCH_LOGIN_MAX_RPS", 100, 1),
        # The dev box does ~9 uploads/s of 2 MP (~0.2 s of a core each, on 2
        # cores) and ~3 of 12 MP; twice that leaves room for a faster box, and
        # costs only a few more accounts (see plan_upload()).
        upload_max_rps=_int_setting(env, "BENCH_UPLOAD_MAX_RPS", 20, 1),
        social_users=_int_setting(env, "BENCH_SOCIAL_USERS", 1000, 2, MAX_SOCIAL_USERS),
        social_follows=_int_setting(env, "BENCH_SOCIAL_FOLLOWS", 20, 0),
        # The dev box posted ~190/s at best (create_post, 64 VUs) and served
        # the mix at ~200-1,000 requests/s (busy): about twice that, as for
        # uploads. More costs preparation time: a fresh upload (~7 ms) per post
        # budgeted, and a deletion after (see plan_compose() and plan_mix()
        # in plans.py).
        compose_max_rps=_int_setting(env, "BENCH_COMPOSE_MAX_RPS", 400, 1),
        mix_max_rps=_int_setting(env, "BENCH_MIX_MAX_RPS", 2000, 1),
        profile=_int_setting(env, "BENCH_PROFILE", 0, 0, 1) == 1,
        ws_sockets=_int_setting(env, "BENCH_WS_SOCKETS", 10_000, 1),
        ws_channels=_int_setting(env, "BENCH_WS_CHANNELS", 100, 1),
        ws_subscribers=_int_setting(env, "BENCH_WS_SUBSCRIBERS", 10, 1),
        ws_rate=_int_setting(env, "BENCH_WS_RATE", 1_000, 1),
        web_loads=_int_setting(env, "BENCH_WEB_LOADS", 10, 1),
    )
    if settings.social_follows >= settings.social_users:
        raise BenchError("BENCH_SOCIAL_FOLLOWS must be below BENCH_SOCIAL_USERS")
    if "wrk" in settings.generators and settings.connections < settings.threads:
        # wrk refuses this itself, with a less helpful message.
        raise BenchError("BENCH_CONNECTIONS must be >= BENCH_THREADS for wrk")
    return settings

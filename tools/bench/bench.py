"""Benchmark harness: load the running stack through Envoy with wrk and k6.

Run it as ``make bench`` (or ``.venv/bin/python tools/bench/bench.py``) against a
stack that is already up. For every load generator it first measures the Envoy
ceiling (``/__bench/ceiling``, a ``direct_response`` of the dev config), then each
scenario with the same threads and duration, and the same connections unless
the scenario sets its own (login does: see below), so that each scenario's
ratio to the ceiling compares like with like.

Scenarios that need accounts get them first, before anything is measured
(see prepare()): ``profile`` needs one logged-in account, ``login`` needs
BENCH_ACCOUNTS of them. The auth service rate-limits by client address
(registrations 5 per 30 min; logins 20/min per address and 5/min per
account), so preparation registers each account from its own loopback
address and the login scenario spreads its VUs over addresses and accounts
so that no limit is reached: see AddressBlock and plan_login().

The upload scenarios send a JPEG that preparation makes with Pillow (a
dependency of the media service, so in this venv): see make_photo(). The
media service allows each user 30 uploads per 30 minutes, so preparation
also registers and logs in enough accounts for every upload to have a user
with budget left: see plan_upload(). What a run uploads is deleted after
it (see delete_uploads()): the dev stack's object store is small.

The posts scenarios (issue 5) read and write a social dataset that
social_prep.py makes and caches (in .run/bench/) for later runs:
BENCH_SOCIAL_USERS accounts, each registered from its own loopback address
and logged in from it, a Zipf follow graph and ~1,900 posts of tiny PNGs.
  global_feed     (wrk) GET /api/v1/posts, anonymous; preparation makes sure
                  the feed has a full page (20 posts).
  home_timeline,  (k6, k6_timeline.js) GET /api/v1/feed and GET
  user_timeline   /api/v1/users/{username}/posts page 1, authenticated as a
                  reader drawn Zipf-distributed (s = 1.0) over the users; the
                  author too (the row keeps the path with its placeholder).
  create_post     (k6, k6_compose.js) POST /api/v1/posts with one fresh media.
  dsb_mix         (wrk, wrk_dsb_mix.lua) 60% home timeline, 30% user
                  timeline, 10% compose, as DeathStarBench's social network.
Every post needs a media its writer uploaded and never attached, and no
user may post more than 10 in the limit's window (10/min, burst 10): each
posting run gets writers of its own, each with 10 media uploaded during
preparation, enough for BENCH_COMPOSE_MAX_RPS (create_post) or
BENCH_MIX_MAX_RPS (dsb_mix, of which 10% compose) for the run's length
(plan_compose(), plan_mix() in social_prep.py); a run that would need more
is refused, and what the runs posted and left unused is deleted at the end
(Social.finish()). The posts scenarios are measured once the posts service
has handled the events earlier load (their warm-up's too) left (fan-out);
their rows hold the hit ratios of its caches over the measured run
(cache_requests_total from its /metrics), and with BENCH_PROFILE=1
global_feed and dsb_mix are profiled with py-spy (observe.py). global_feed
and dsb_mix have goals (Scenario.goal); the verdict is printed and recorded
in the row.

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

The realtime scenarios (issue 6), ws_sockets and ws_latency, run last and
print their own lines (ws_bench.py says what they measure).

Results go to ``results/bench-<UTC timestamp>.json`` at the repo root and a table
is printed on stdout; profiles to ``results/profile-<timestamp>-<scenario>.txt``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import math
import os
import platform
import random
import secrets
import socket
import string
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auth.config import AuthConfig
from media.config import MediaConfig
from PIL import Image
from social_stack.paths import REPO_ROOT

if TYPE_CHECKING:  # mypy knows tools/bench/ as the package "bench"
    from bench import generators, observe, social_prep, ws_bench
    from bench.stackapi import JSON_HEADERS, BenchError, delete, login, multipart_body, register
else:  # run as a script: tools/bench/ is on sys.path
    import generators
    import observe
    import social_prep
    import ws_bench
    from stackapi import JSON_HEADERS, BenchError, delete, login, multipart_body, register

GENERATOR_NAMES = ("wrk", "k6")
WS_SCENARIOS = ("ws_sockets", "ws_latency")


@dataclass(frozen=True)
class Goal:
    """What a scenario should reach: at least ``requests_per_s``, a p95 of at
    most ``p95_ms``, and an error rate below ``error_rate_below`` (0: no
    error at all)."""

    requests_per_s: float
    p95_ms: float
    error_rate_below: float = 0.0

    def __str__(self) -> str:
        errors = (
            "no errors" if self.error_rate_below == 0 else f"errors < {self.error_rate_below:.1%}"
        )
        return f">= {self.requests_per_s:,.0f} req/s, p95 <= {self.p95_ms:g} ms, {errors}"

    def missed(self, result: Measurement) -> list[str]:
        """What ``result`` misses of the goal (empty: met)."""
        missed = []
        if result.requests_per_s < self.requests_per_s:
            missed.append(f"{result.requests_per_s:,.0f} req/s")
        if result.p95_ms > self.p95_ms:
            missed.append(f"p95 {result.p95_ms:.1f} ms")
        if self.error_rate_below == 0:
            failed = result.errors > 0
        else:
            failed = result.error_rate >= self.error_rate_below
        if failed:
            missed.append(f"{result.errors} errors ({result.error_rate:.3%})")
        return missed


@dataclass(frozen=True)
class Scenario:
    """One kind of load: a single request, or scripts of its own for mixes.

    ``wrk_script`` / ``k6_script`` are paths relative to tools/bench/ that
    replace the generic scripts (see the comments at the top of those).

    Header values and the body may hold ``${name}`` placeholders, filled in
    once preparation has run (write a literal ``$`` as ``$$``). ``needs`` says
    what to prepare: "token" (one logged-in account: ``${access_token}``,
    ``${username}``, ``${password}``), "accounts" (BENCH_ACCOUNTS accounts,
    logged in by the k6 script as plan_login() says) and "uploads" (the
    access tokens of as many accounts as plan_upload() says, and the JPEG
    ``photo``: width and height, made by make_photo()).
    ``connections`` replaces BENCH_CONNECTIONS for this scenario;
    ``generators`` are the ones able to run it.

    The posts scenarios' needs (social_prep.py): "feed" (the global feed
    has a full page), "social" (the dataset, its users' tokens for
    k6_timeline.js, ``${social_token}`` and ``${social_user}``: the most
    popular user's), "compose" (writers' pools for k6_compose.js, and
    ``${compose_token}`` / ``${compose_media}``: one more for the check) and
    "mix" (the dataset and writers' pools for wrk_dsb_mix.lua). The path may
    hold placeholders too.
    """

    name: str
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""
    expect_status: int = 200
    wrk_script: str | None = None
    k6_script: str | None = None
    needs: frozenset[str] = frozenset()
    connections: int | None = None
    generators: tuple[str, ...] = GENERATOR_NAMES
    photo: tuple[int, int] | None = None
    goal: Goal | None = None
    # The posts service serves it: wait for its events to settle first, and
    # record its cache hit ratios; ``profile``: py-spy it with BENCH_PROFILE=1.
    posts: bool = False
    profile: bool = False


# Measured first by every generator; each scenario's ratio is against it.
CEILING = Scenario(name="ceiling", path="/__bench/ceiling")

# Uploads in flight at once: one per media worker process (why: see k6_upload.js).
UPLOAD_VUS = 2

# Add scenarios here. Later ones may set method, headers (e.g. a bearer
# token), body, or a wrk_script / k6_script of their own.
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(name="health", path="/api/v1/auth/healthz"),
    # An authenticated read: Envoy checks the JWT, then the service reads the row.
    Scenario(
        name="profile",
        path="/api/v1/users/profile",
        headers={"Authorization": "Bearer ${access_token}"},
        needs=frozenset({"token"}),
    ),
    # Each login verifies an argon2id hash (~20 ms of a core, on 2 hash
    # workers), so the box does tens per second and 8 concurrent logins are
    # enough to reach that; more would only queue. k6 only: wrk cannot spread
    # its connections over source addresses. The body is what check_target()
    # sends; k6_login.js logs in as the prepared accounts.
    Scenario(
        name="login",
        path="/api/v1/users/login",
        method="POST",
        headers=JSON_HEADERS,
        body='{"username": "${username}", "password": "${password}"}',
        k6_script="k6_login.js",
        needs=frozenset({"token", "accounts"}),
        connections=8,
        generators=("k6",),
    ),
    # Photo uploads: the media service decodes, strips and resizes each into 4
    # renditions (~0.2 s of a core for 2 MP, ~0.6 s for 12 MP) in 2 worker
    # processes, then stores them in S3. Connections: UPLOAD_VUS. k6 only
    # (multipart bodies, a token per account). The header is what
    # check_target() sends, with the photo; k6_upload.js uploads as the
    # prepared accounts.
    *(
        Scenario(
            name=f"upload_{name}",
            path="/api/v1/media",
            method="POST",
            headers={"Authorization": "Bearer ${access_token}"},
            expect_status=201,
            k6_script="k6_upload.js",
            needs=frozenset({"token", "uploads"}),
            connections=UPLOAD_VUS,
            generators=("k6",),
            photo=photo,
        )
        for name, photo in (("2mp", (1920, 1080)), ("12mp", (4000, 3000)))
    ),
    # The posts service (issue 5). Anonymous first pages of the global feed
    # are rendered once per change and served from memory.
    Scenario(
        name="global_feed",
        path="/api/v1/posts",
        needs=frozenset({"feed"}),
        generators=("wrk",),
        goal=Goal(requests_per_s=16_667, p95_ms=50),
        posts=True,
        profile=True,
    ),
    # Authenticated reads by Zipf-drawn users of the dataset (k6_timeline.js);
    # the headers and path are the check's.
    *(
        Scenario(
            name=name,
            path=path,
            headers={"Authorization": "Bearer ${social_token}"},
            k6_script="k6_timeline.js",
            needs=frozenset({"social"}),
            generators=("k6",),
            posts=True,
        )
        for name, path in (
            ("home_timeline", "/api/v1/feed"),
            ("user_timeline", "/api/v1/users/${social_user}/posts"),
        )
    ),
    # Each post with a fresh media of its writer's (k6_compose.js); the body
    # is the check's, from a pool of its own.
    Scenario(
        name="create_post",
        path="/api/v1/posts",
        method="POST",
        headers={"Authorization": "Bearer ${compose_token}", **JSON_HEADERS},
        body='{"caption": "bench check", "media_ids": ["${compose_media}"]}',
        expect_status=201,
        k6_script="k6_compose.js",
        needs=frozenset({"social", "compose"}),
        generators=("k6",),
        posts=True,
    ),
    # DeathStarBench's social-network mix (wrk_dsb_mix.lua); the check reads
    # the home timeline.
    Scenario(
        name="dsb_mix",
        path="/api/v1/feed",
        headers={"Authorization": "Bearer ${social_token}"},
        wrk_script="wrk_dsb_mix.lua",
        needs=frozenset({"social", "mix"}),
        generators=("wrk",),
        goal=Goal(requests_per_s=5_000, p95_ms=200, error_rate_below=0.001),
        posts=True,
        profile=True,
    ),
)

HERE = Path(__file__).resolve().parent
RESULTS_DIR = REPO_ROOT / "results"
WRK_SCRIPT = HERE / "wrk_scenario.lua"
K6_SCRIPT = HERE / "k6_scenario.js"

# The services' limits, read from their own settings (the defaults a stack
# started by `make up` runs with). They are GCRA buckets: a burst of `limit`,
# refilled at limit/period.
LOGIN_PER_ACCOUNT = AuthConfig.login_per_account.limit  # per minute
LOGIN_PER_ADDRESS = AuthConfig.login_per_ip.limit  # per minute
# Per user, a burst of 30 then one more a minute. Bench accounts are new in
# every run, so each has its 30 for the run.
UPLOADS_PER_ACCOUNT = MediaConfig.upload_rate.limit
ACCESS_TOKEN_S = AuthConfig.access_ttl
# Registrations in flight at once during preparation (each costs a hash).
REGISTER_THREADS = 8
# Login VUs take turns this long at most (see plan_login()).
LOGIN_SLOT_MS = 1000
# Host addresses in a /24 (.1 to .254): one /24 of VUs per login run.
HOSTS_PER_24 = 254
# Registrations come from two /24s; one of them is the profile's account.
REGISTRATION_ADDRESSES = 2 * HOSTS_PER_24
MAX_ACCOUNTS = REGISTRATION_ADDRESSES - 1
# The social dataset's accounts come from a /22 of their own (see
# AddressBlock), but for the last few addresses: the feed's authors'.
SOCIAL_SECOND_OFFSET = 100
SOCIAL_ADDRESSES = 4 * HOSTS_PER_24
FEED_AUTHORS_MAX = 2
MAX_SOCIAL_USERS = SOCIAL_ADDRESSES - FEED_AUTHORS_MAX
# A sharp photo's detail (fine noise) over soft shapes (coarse noise) over
# gradients, as make_photo() mixes them: ~3 bits a pixel at JPEG quality 90,
# as phone photos have (0.8 MB for 2 MP, 4.5 MB for 12 MP).
PHOTO_FINE_NOISE = 0.15
PHOTO_COARSE_NOISE = 0.4
PHOTO_QUALITY = 90
# Proxies must not see the load, and must not turn a loopback URL into a remote hop.


@dataclass(frozen=True)
class Settings:
    """What one run measures and how hard."""

    base_url: str
    duration_s: int
    warmup_s: int
    connections: int
    threads: int
    scenarios: tuple[str, ...]
    generators: tuple[str, ...]
    accounts: int
    login_max_rps: int
    upload_max_rps: int
    social_users: int
    social_follows: int
    compose_max_rps: int
    mix_max_rps: int
    profile: bool
    ws_sockets: int
    ws_channels: int
    ws_subscribers: int
    ws_rate: int


@dataclass(frozen=True)
class Measurement:
    """What one generator saw during one measured run."""

    requests: int
    duration_s: float
    errors: int
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    # 429 and 503 replies, where the script counts them apart (None: not counted).
    rate_limited: int | None = None
    unavailable: int | None = None
    # What a script counts besides (dsb_mix: requests of each kind).
    extra: Mapping[str, int] | None = None

    @property
    def requests_per_s(self) -> float:
        """Completed requests per second of measured time."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


# --------------------------------------------------------------------------- settings


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
    scenario_names = tuple(s.name for s in SCENARIOS) + WS_SCENARIOS
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
        # in social_prep.py).
        compose_max_rps=_int_setting(env, "BENCH_COMPOSE_MAX_RPS", 400, 1),
        mix_max_rps=_int_setting(env, "BENCH_MIX_MAX_RPS", 2000, 1),
        profile=_int_setting(env, "BENCH_PROFILE", 0, 0, 1) == 1,
        ws_sockets=_int_setting(env, "BENCH_WS_SOCKETS", 10_000, 1),
        ws_channels=_int_setting(env, "BENCH_WS_CHANNELS", 100, 1),
        ws_subscribers=_int_setting(env, "BENCH_WS_SUBSCRIBERS", 10, 1),
        ws_rate=_int_setting(env, "BENCH_WS_RATE", 1_000, 1),
    )
    if settings.social_follows >= settings.social_users:
        raise BenchError("BENCH_SOCIAL_FOLLOWS must be below BENCH_SOCIAL_USERS")
    if "wrk" in settings.generators and settings.connections < settings.threads:
        # wrk refuses this itself, with a less helpful message.
        raise BenchError("BENCH_CONNECTIONS must be >= BENCH_THREADS for wrk")
    return settings


# --------------------------------------------------------------------------- tools


def _headers_text(headers: Mapping[str, str]) -> str:
    # One "Name: value" per line: both scripts parse this without a JSON library.
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


def _script(own: str | None, default: Path) -> Path:
    script = HERE / own if own else default
    if not script.is_file():
        # wrk exits 0 when its script is missing, so say it here.
        raise BenchError(f"script not found: {script}")
    return script


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True)
class AddressBlock:
    """The loopback addresses a run sends from where the rate limits count by
    client address: the /22 ``127.A.B.0/22``, chosen by the clock.

    Linux routes all of 127.0.0.0/8 to ``lo``, so any of these can be bound
    without setup. With ``s`` = Unix seconds mod 3600, ``A = 1 + s // 64`` and
    ``B = 4 * (s % 64)``: a block comes back only after an hour, well past the
    30 minutes the registration limit remembers (and the minute of the login
    limits), however often the bench is run; only runs started in the same
    second share one. 127.0.0.0/16, where 127.0.0.1 and the usual clients
    live, is never used.

      127.A.B.x and 127.A.B+1.x   registrations, one address each
      127.A.B+2.x                 the login warm-up's VUs
      127.A.B+3.x                 the login measurement's VUs

    And a second /22 ``127.A+100.B.0/22`` (127.101-157: clear of the first
    kind and of the tests' 127.1.x.y) for the social dataset (social_prep.py):
    its user of rank i registers and logs in from ``social(i)``; the global
    feed's authors, if the feed needs any, from the last addresses.
    """

    second: int
    third: int

    @classmethod
    def for_time(cls, unix_s: float) -> AddressBlock:
        slot = int(unix_s) % 3600
        return cls(second=1 + slot // 64, third=4 * (slot % 64))

    def __str__(self) -> str:
        return f"127.{self.second}.{self.third}.0/22"

    def registration(self, index: int) -> str:
        """Source address of the ``index``-th registration (0 to MAX_ACCOUNTS)."""
        return f"127.{self.second}.{self.third + index // HOSTS_PER_24}.{index % HOSTS_PER_24 + 1}"

    def social(self, index: int) -> str:
        """Source address of the social dataset's user ``index`` (0 to SOCIAL_ADDRESSES - 1)."""
        third = self.third + index // HOSTS_PER_24
        return f"127.{self.second + SOCIAL_SECOND_OFFSET}.{third}.{index % HOSTS_PER_24 + 1}"

    def feed_author(self, index: int) -> str:
        """Source address of the global feed's author ``index`` (0 to FEED_AUTHORS_MAX - 1)."""
        return self.social(SOCIAL_ADDRESSES - 1 - index)

    def login_range(self, count: int, *, warmup: bool) -> str:
        """The first ``count`` addresses of a login run's /24, as k6 --local-ips."""
        prefix = f"127.{self.second}.{self.third + (2 if warmup else 3)}"
        return f"{prefix}.1-{prefix}.{count}"


@dataclass(frozen=True)
class LoginPlan:
    """How k6_login.js spreads one run's logins so that no limit is reached.

    k6 gives each VU one source address of ``--local-ips``. ``groups`` groups
    of ``active`` VUs take turns, ``slot_ms`` each: ``active`` logins are in
    flight at any moment (the row's connections), and each VU, so each
    address, logs in during few slots. Each login takes the next of the
    ``accounts`` accounts from ``first_account`` on. The script sends no more
    than ``address_budget`` logins per VU nor ``account_budget`` per account.
    """

    active: int
    groups: int
    slot_ms: int
    address_budget: int
    account_budget: int
    first_account: int
    accounts: int
    local_ips: str
    accounts_file: str = ""

    @property
    def vus(self) -> int:
        return self.active * self.groups

    def k6_variables(self) -> dict[str, str]:
        return {
            "BENCH_ACCOUNTS_FILE": self.accounts_file,
            "BENCH_ACCOUNT_FIRST": str(self.first_account),
            "BENCH_ACCOUNT_COUNT": str(self.accounts),
            "BENCH_ACCOUNT_BUDGET": str(self.account_budget),
            "BENCH_ADDRESS_BUDGET": str(self.address_budget),
            "BENCH_ACTIVE": str(self.active),
            "BENCH_GROUPS": str(self.groups),
            "BENCH_SLOT_MS": str(self.slot_ms),
        }


def plan_login(
    settings: Settings,
    block: AddressBlock,
    active: int,
    duration_s: int,
    first_account: int,
    *,
    warmup: bool,
) -> LoginPlan:
    """The plan of one login run of ``duration_s``, for at most
    BENCH_LOGIN_MAX_RPS logins/s; raise if the addresses cannot carry it.

    Budgets: each limit once per started minute of the run. The server's
    buckets let at least that through (a burst of `limit`, then `limit` more
    each minute), so a plan that keeps to them meets no 429.

    Turns last 1 s, or less if one VU could send more than its address's
    budget in one. With the defaults (8 active VUs, 100 logins/s at most):
      in a 1 s turn, one VU sends at most 100 * 1 / 8 = 12.5 logins <= 20, so
      each address may have 1 turn; 10 s measured = 10 turns = 10 groups =
      80 VUs and addresses, each <= 12.5 logins (< 20/min). Accounts: at most
      100 * 10 = 1000 logins, plus up to one iteration per VU that only waits
      for the end but takes an account's turn: (1000 + 80) / 5 = 216
      accounts, each logged in <= 5 times (5/min). The 2 s warm-up, on
      addresses of its own: 2 groups, 16 VUs, (200 + 16) / 5 = 44 accounts.
    """
    minutes = math.ceil(duration_s / 60)
    address_budget = LOGIN_PER_ADDRESS * minutes
    account_budget = LOGIN_PER_ACCOUNT * minutes
    slot_ms = min(LOGIN_SLOT_MS, address_budget * active * 1000 // settings.login_max_rps)
    phase = "BENCH_WARMUP" if warmup else "BENCH_DURATION"
    if slot_ms < 1:
        raise BenchError(f"login: BENCH_LOGIN_MAX_RPS={settings.login_max_rps} is too high")
    per_slot = settings.login_max_rps * slot_ms / 1000 / active
    slots_per_address = math.floor(address_budget / per_slot)
    groups = math.ceil(math.ceil(duration_s * 1000 / slot_ms) / slots_per_address)
    if active * groups > HOSTS_PER_24:
        longest = HOSTS_PER_24 // active * slots_per_address * slot_ms // 1000
        raise BenchError(
            f"login: {duration_s}s ({phase}) at up to {settings.login_max_rps} logins/s "
            f"needs more than the {HOSTS_PER_24} source addresses of a /24 to stay under "
            f"{address_budget} logins per address: shorten {phase} (to about {longest}s) "
            "or, if the stack is slower, lower BENCH_LOGIN_MAX_RPS"
        )
    accounts = math.ceil((settings.login_max_rps * duration_s + active * groups) / account_budget)
    return LoginPlan(
        active=active,
        groups=groups,
        slot_ms=slot_ms,
        address_budget=address_budget,
        account_budget=account_budget,
        first_account=first_account,
        accounts=accounts,
        local_ips=block.login_range(active * groups, warmup=warmup),
    )


def login_plans(
    settings: Settings, block: AddressBlock, active: int
) -> tuple[LoginPlan | None, LoginPlan]:
    """The warm-up's plan (None without warm-up) and the measurement's, on
    accounts of their own; raise if BENCH_ACCOUNTS is too few for them."""
    warmup = (
        plan_login(settings, block, active, settings.warmup_s, 0, warmup=True)
        if settings.warmup_s
        else None
    )
    first = warmup.accounts if warmup else 0
    measure = plan_login(settings, block, active, settings.duration_s, first, warmup=False)
    needed = first + measure.accounts
    if needed > settings.accounts:
        raise BenchError(
            f"login: BENCH_ACCOUNTS={settings.accounts} is too few to stay under "
            f"{LOGIN_PER_ACCOUNT} logins/min per account for {settings.warmup_s}s + "
            f"{settings.duration_s}s at up to {settings.login_max_rps} logins/s: set "
            f"BENCH_ACCOUNTS={needed} or more (at most {MAX_ACCOUNTS}), or shorten the run"
        )
    # The measurement spreads over all the accounts left.
    return warmup, replace(measure, accounts=settings.accounts - first)


@dataclass(frozen=True)
class UploadPlan:
    """How k6_upload.js spreads one run's uploads over accounts.

    Upload n of the run (over all VUs) is sent with token ``first_account +
    n mod accounts`` of ``tokens_file``, and none beyond ``accounts *
    account_budget``: no account uploads more than its budget.
    """

    vus: int
    first_account: int
    accounts: int
    account_budget: int
    tokens_file: str
    photo: str

    def k6_variables(self) -> dict[str, str]:
        return {
            "BENCH_TOKENS_FILE": self.tokens_file,
            "BENCH_ACCOUNT_FIRST": str(self.first_account),
            "BENCH_ACCOUNT_COUNT": str(self.accounts),
            "BENCH_ACCOUNT_BUDGET": str(self.account_budget),
            "BENCH_PHOTO": self.photo,
        }


# What a run may need beyond its scenario (wrk: a MixPlan only).
Plan = (
    LoginPlan
    | UploadPlan
    | social_prep.TimelinePlan
    | social_prep.ComposePlan
    | social_prep.MixPlan
)


def plan_upload(
    settings: Settings, vus: int, duration_s: int, first_account: int, workdir: Path, photo: Path
) -> UploadPlan:
    """The plan of one upload run of ``duration_s``, for at most
    BENCH_UPLOAD_MAX_RPS uploads/s.

    A run starts at most BENCH_UPLOAD_MAX_RPS * ``duration_s`` uploads that
    end in it, plus one per VU still in flight at its end. With the defaults
    (2 VUs, 20 uploads/s at most, 30 uploads per account): the 2 s warm-up
    sends at most 20 * 2 + 2 = 42 uploads, so 2 accounts; the 10 s
    measurement 20 * 10 + 2 = 202, so 7 accounts (<= 29 uploads each): 9 per
    scenario, 18 for both. (Measured: ~9 uploads/s of 2 MP, ~3 of 12 MP.)
    """
    uploads = settings.upload_max_rps * duration_s + vus
    return UploadPlan(
        vus=vus,
        first_account=first_account,
        accounts=math.ceil(uploads / UPLOADS_PER_ACCOUNT),
        account_budget=UPLOADS_PER_ACCOUNT,
        tokens_file=str(workdir / "tokens.json"),
        photo=str(photo),
    )


def upload_plans(
    settings: Settings, scenarios: list[Scenario], workdir: Path
) -> dict[tuple[str, bool], UploadPlan]:
    """Per upload scenario and warm-up (True) or measurement (False), its
    plan, each on accounts of its own."""
    plans: dict[tuple[str, bool], UploadPlan] = {}
    first = 0
    for scenario in scenarios:
        for warmup, duration_s in ((True, settings.warmup_s), (False, settings.duration_s)):
            if duration_s:
                vus = connections_for(settings, scenario)
                photo = workdir / f"{scenario.name}.jpg"
                plan = plan_upload(settings, vus, duration_s, first, workdir, photo)
                plans[scenario.name, warmup] = plan
                first += plan.accounts
    return plans


# --------------------------------------------------------------------------- photos


def make_photo(path: Path, width: int, height: int) -> None:
    """Write a photo-like JPEG of ``width`` x ``height`` to ``path``.

    Gradients, soft shapes and sharp detail, so that it weighs and costs what
    a camera's photo does (the resizes keep detail, unlike pure noise), with
    the EXIF block a phone writes: make, model, orientation, date. Seeded by
    the size: every run uploads the same bytes.
    """
    rng = random.Random(width * height)  # noqa: S311 - pixels, not secrets
    picture = Image.merge(
        "RGB",
        (
            Image.linear_gradient("L").rotate(90).resize((width, height)),
            Image.linear_gradient("L").resize((width, height)),
            Image.radial_gradient("L").resize((width, height)),
        ),
    )
    small = (width // 16, height // 16)
    coarse = Image.frombytes("RGB", small, rng.randbytes(small[0] * small[1] * 3))
    picture = Image.blend(
        picture, coarse.resize((width, height), Image.Resampling.BICUBIC), PHOTO_COARSE_NOISE
    )
    fine = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    picture = Image.blend(picture, fine, PHOTO_FINE_NOISE)
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = "Bench Phone 1"  # Model
    exif[0x0112] = 1  # Orientation: upright
    exif[0x0132] = "2026:01:01 12:00:00"  # DateTime
    picture.save(path, "JPEG", quality=PHOTO_QUALITY, exif=exif.tobytes())


# --------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class Prepared:
    """What preparation made: placeholder values, the login and upload
    plans, the photos (by scenario name), and the posts scenarios' plans
    (by scenario name and warm-up or not)."""

    values: Mapping[str, str] = field(default_factory=dict)
    warmup_plan: LoginPlan | None = None
    measure_plan: LoginPlan | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    upload_plans: Mapping[tuple[str, bool], UploadPlan] = field(default_factory=dict)
    photos: Mapping[str, Path] = field(default_factory=dict)
    social_plans: Mapping[tuple[str, bool], Plan] = field(default_factory=dict)

    def resolve(self, scenario: Scenario) -> Scenario:
        """``scenario`` with its ``${name}`` placeholders filled in."""
        if not scenario.needs:
            return scenario

        def fill(text: str) -> str:
            return string.Template(text).substitute(self.values)

        try:
            return replace(
                scenario,
                path=fill(scenario.path),
                headers={name: fill(value) for name, value in scenario.headers.items()},
                body=fill(scenario.body),
            )
        except (KeyError, ValueError) as exc:
            raise BenchError(f"{scenario.name}: bad placeholder {exc}") from None

    def plan(self, scenario: Scenario, *, warmup: bool) -> Plan | None:
        if (scenario.name, warmup) in self.social_plans:
            return self.social_plans[scenario.name, warmup]
        if "uploads" in scenario.needs:
            return self.upload_plans[scenario.name, warmup]
        if "accounts" not in scenario.needs:
            return None
        return self.warmup_plan if warmup else self.measure_plan


# What the original preparation below makes; the rest is the posts scenarios'.
ACCOUNT_NEEDS = frozenset({"token", "accounts", "uploads"})


def prepare_social(
    settings: Settings,
    scenarios: list[Scenario],
    block: AddressBlock,
    workdir: Path,
    social: social_prep.Social,
) -> Prepared:
    """What the posts scenarios need (see social_prep.py): the dataset, then
    per posting run (warm-up and measurement apart) writers with their
    pools of fresh media, and the files the scripts read. All uploads are
    done here, before anything is measured."""
    needs = frozenset().union(*(s.needs for s in scenarios))
    if not needs:
        return Prepared()
    started = time.monotonic()
    values: dict[str, str] = {}
    plans: dict[tuple[str, bool], Plan] = {}
    info: dict[str, Any] = {}
    phases = [(True, settings.warmup_s), (False, settings.duration_s)]
    # The scripts' files, written once the tokens in them are refreshed.
    writes: list[Callable[[], None]] = []
    if "social" in needs:
        dataset = social.prepare(settings.social_users, settings.social_follows, block.social)
        info.update(
            dataset=dataset.run_id,
            users=len(dataset.users),
            follows_per_user=dataset.follows,
            zipf_s=social_prep.ZIPF_S,
            cache=str(social.cache_file.relative_to(REPO_ROOT)),
        )
    if "feed" in needs:
        info["feed_posts_made"] = social.ensure_feed(block.feed_author)
    if "compose" in needs:
        (check,) = social.pools_for("create_post check", 1, 1)
        values["compose_token"], values["compose_media"] = check.user.access_token, check.media[0]
    for scenario in scenarios:
        vus = connections_for(settings, scenario)
        for warmup, duration_s in phases:
            if not duration_s:
                continue
            phase = f"{scenario.name} {'warm-up' if warmup else 'measurement'}"
            file = workdir / f"{scenario.name}-{'warmup' if warmup else 'measure'}"
            plan: Plan
            if "compose" in scenario.needs:
                writers = social_prep.plan_compose(settings.compose_max_rps, vus, duration_s)
                pools = social.pools_for(phase, writers)
                writes.append(partial(social.write_pools_file, pools, file.with_suffix(".json")))
                plan = social_prep.ComposePlan(
                    vus, writers, social_prep.POSTS_BURST, str(file.with_suffix(".json"))
                )
            elif "mix" in scenario.needs:
                threads = min(settings.threads, vus)
                per_thread = social_prep.plan_mix(settings.mix_max_rps, threads, vus, duration_s)
                pools = social.pools_for(phase, threads * per_thread)
                by_thread = [pools[t * per_thread : (t + 1) * per_thread] for t in range(threads)]
                writes.append(partial(social.write_mix_file, by_thread, file.with_suffix(".txt")))
                plan = social_prep.MixPlan(
                    threads, per_thread, social_prep.POSTS_BURST, str(file.with_suffix(".txt"))
                )
            elif "social" in scenario.needs:
                users_file = str(workdir / "social_users.json")
                plan = social_prep.TimelinePlan(vus, scenario.name, users_file, settings.base_url)
            else:
                continue
            plans[scenario.name, warmup] = plan
    # Tokens the scripts get must outlive the run: refreshed after the uploads.
    if social.dataset is not None:
        social.fresh_tokens()
        social.write_users_file(workdir / "social_users.json")
        for write in writes:
            write()
        values["social_token"] = social.dataset.users[0].access_token
        values["social_user"] = social.dataset.users[0].username
    info["uploads"] = sum(len(pool.media) for pool in social.pools)
    info["seconds"] = round(time.monotonic() - started, 1)
    print(f"bench: social: prepared in {info['seconds']}s", file=sys.stderr)
    return Prepared(values=values, info={"social": info}, social_plans=plans)


def prepare(
    settings: Settings,
    scenarios: list[Scenario],
    block: AddressBlock,
    workdir: Path,
    social: social_prep.Social,
) -> Prepared:
    """What ``scenarios`` need, before any measurement: the posts scenarios'
    (prepare_social()) first, then the accounts of the others
    (prepare_accounts()), whose access token is then the freshest."""
    posts = prepare_social(
        settings, [s for s in scenarios if s.needs - ACCOUNT_NEEDS], block, workdir, social
    )
    accounts = prepare_accounts(
        settings, [s for s in scenarios if s.needs & ACCOUNT_NEEDS], block, workdir
    )
    return replace(
        accounts,
        values={**accounts.values, **posts.values},
        info={**accounts.info, **posts.info},
        social_plans=posts.social_plans,
    )


def prepare_accounts(
    settings: Settings, scenarios: list[Scenario], block: AddressBlock, workdir: Path
) -> Prepared:
    """Register and log in what ``scenarios`` need, before any measurement.

    Accounts are named ``bench_<run id>_<n>`` and each is registered from its
    own address of ``block``. Account 0 logs in once for the access token;
    with "accounts", BENCH_ACCOUNTS more go to ``workdir/accounts.json`` for
    k6_login.js; with "uploads", the accounts the upload plans need come
    last, each logs in once from its own address, and their access tokens go
    to ``workdir/tokens.json`` for k6_upload.js, beside the photos. Nothing is
    registered if the plans do not fit.
    """
    needs = frozenset().union(*(s.needs for s in scenarios))
    if not needs:
        return Prepared()
    spread = next((s for s in scenarios if "accounts" in s.needs), None)
    warmup_plan = measure_plan = None
    if spread is not None:
        active = spread.connections or settings.connections
        warmup_plan, measure_plan = login_plans(settings, block, active)
    uploads = upload_plans(settings, [s for s in scenarios if "uploads" in s.needs], workdir)
    uploaders = sum(plan.accounts for plan in uploads.values())
    run_id = secrets.token_hex(4)
    count = 1 + (settings.accounts if spread is not None else 0) + uploaders
    if count > REGISTRATION_ADDRESSES:
        raise BenchError(
            f"uploads: {uploaders} accounts, for up to {settings.upload_max_rps} uploads/s "
            f"within {UPLOADS_PER_ACCOUNT} per account, make {count} registrations, more than "
            f"the {REGISTRATION_ADDRESSES} addresses they come from: shorten BENCH_DURATION "
            "or, if the stack is slower, lower BENCH_UPLOAD_MAX_RPS"
            + (" (or BENCH_ACCOUNTS)" if spread is not None else "")
        )
    accounts = [(f"bench_{run_id}_{i:04d}", "bench-" + secrets.token_hex(12)) for i in range(count)]
    first, last = block.registration(0), block.registration(count - 1)
    print(f"bench: preparing: registering {count} account(s) from {first}..{last}", file=sys.stderr)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=REGISTER_THREADS) as pool:
        futures = [
            pool.submit(register, settings, username, password, block.registration(i))
            for i, (username, password) in enumerate(accounts)
        ]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                if done % 50 == 0 or done == count:
                    print(f"bench: preparing: {done}/{count} registered", file=sys.stderr)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    username, password = accounts[0]
    values = {
        "access_token": login(settings, username, password, first),
        "username": username,
        "password": password,
    }
    info: dict[str, Any] = {
        "run_id": run_id,
        "address_block": str(block),
        "registration_addresses": f"{first}-{last}",
        "accounts": count,
    }
    photos: dict[str, Path] = {}
    if uploads:
        # One login per account, each from the address it registered from.
        print(f"bench: preparing: logging in {uploaders} uploader(s)", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=REGISTER_THREADS) as pool:
            tokens = list(
                pool.map(
                    lambda i: login(settings, *accounts[i], block.registration(i)),
                    range(count - uploaders, count),
                )
            )
        (workdir / "tokens.json").write_text(json.dumps(tokens))
        info["uploaders"] = uploaders
        for scenario in scenarios:
            if scenario.photo is not None:
                photos[scenario.name] = Path(uploads[scenario.name, False].photo)
                make_photo(photos[scenario.name], *scenario.photo)
    if warmup_plan is not None or measure_plan is not None:
        accounts_file = workdir / "accounts.json"
        accounts_file.write_text(
            json.dumps(
                [{"username": u, "password": pw} for u, pw in accounts[1 : 1 + settings.accounts]]
            )
        )
        if warmup_plan is not None:
            warmup_plan = replace(warmup_plan, accounts_file=str(accounts_file))
        if measure_plan is not None:
            measure_plan = replace(measure_plan, accounts_file=str(accounts_file))
    info["seconds"] = round(time.monotonic() - started, 1)
    print(f"bench: preparing: done in {info['seconds']}s", file=sys.stderr)
    return Prepared(values, warmup_plan, measure_plan, info, uploads, photos)


def delete_uploads(settings: Settings, path: str, tokens_file: str, log: str) -> None:
    """Delete what a k6_upload.js run uploaded, as its ``log`` lists it
    ("BENCH_MEDIA <token index> <media id>" lines), each with its owner's token.

    The dev stack's object store holds ~1.6 GB (SeaweedFS: 25 volumes of 64 MB
    for the bucket) and a default run uploads ~0.23 GB: kept, a few runs would
    fill it. (SeaweedFS frees deleted bytes when it vacuums: every 14 minutes.)
    """
    tokens: list[str] = json.loads(Path(tokens_file).read_text())
    uploads = [line.split()[1:3] for line in log.splitlines() if line.startswith("BENCH_MEDIA ")]
    with ThreadPoolExecutor(max_workers=REGISTER_THREADS) as pool:
        statuses = list(
            pool.map(
                lambda u: delete(settings, f"{path}/{u[1]}", f"Bearer {tokens[int(u[0])]}"),
                uploads,
            )
        )
    if failed := sum(status != 204 for status in statuses):
        print(
            f"bench: {failed} of {len(uploads)} uploads not deleted (statuses "
            f"{sorted(set(statuses))}): the media service sweeps them after 24 h",
            file=sys.stderr,
        )


# --------------------------------------------------------------------------- generators


def connections_for(settings: Settings, scenario: Scenario) -> int:
    """Connections (k6: VUs sending at once) that ``scenario`` runs with."""
    return scenario.connections or settings.connections


def run_wrk(
    settings: Settings, scenario: Scenario, duration_s: int, plan: Plan | None
) -> Measurement:
    """Load ``scenario`` with wrk for ``duration_s`` and read the script's JSON line.

    ``plan`` is None but for dsb_mix's MixPlan (the script's data file).
    """
    script = _script(scenario.wrk_script, WRK_SCRIPT)
    connections = connections_for(settings, scenario)
    argv = [
        generators.find_wrk(),
        f"--connections={connections}",
        f"--threads={min(settings.threads, connections)}",
        f"--duration={duration_s}s",
        f"--script={script}",
        settings.base_url + scenario.path,
    ]
    env = generators.child_env(
        {
            "BENCH_METHOD": scenario.method,
            "BENCH_HEADERS": _headers_text(scenario.headers),
            "BENCH_BODY": scenario.body,
            "BENCH_WRK_LUA": str(WRK_SCRIPT),
            **(plan.wrk_env() if isinstance(plan, social_prep.MixPlan) else {}),
        }
    )
    done = generators.run_tool(argv, env, duration_s + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (rc={done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errs: dict[str, int] = data["errors"]
    requests = int(data["requests"])
    errors = sum(errs.values())
    # Socket errors and timeouts may not yield a counted request, so they join
    # the denominator; the rate is the share of attempts that went wrong.
    attempts = requests + errs["connect"] + errs["read"] + errs["write"] + errs["timeout"]
    latency: dict[str, float] = data["latency_us"]
    extra: dict[str, int] | None = data.get("extra")
    if isinstance(plan, social_prep.MixPlan) and extra and (skipped := extra["compose_skipped"]):
        raise BenchError(
            f"{scenario.name}: {skipped} compose(s) not sent, to stay within the posts "
            f"limit: the stack served the mix faster than the {settings.mix_max_rps} "
            "requests/s planned for. Raise BENCH_MIX_MAX_RPS"
        )
    return Measurement(
        requests=requests,
        duration_s=data["duration_us"] / 1e6,
        errors=errors,
        error_rate=min(1.0, errors / attempts) if attempts else 0.0,
        p50_ms=latency["p50"] / 1000,
        p95_ms=latency["p95"] / 1000,
        p99_ms=latency["p99"] / 1000,
        extra=extra,
    )


def run_k6(
    settings: Settings, scenario: Scenario, duration_s: int, plan: Plan | None
) -> Measurement:
    """Load ``scenario`` with k6 (constant VUs = connections) and read its summary.

    With a ``plan`` the VUs are the plan's; a login plan's each on its own
    source address.
    """
    script = _script(scenario.k6_script, K6_SCRIPT)
    variables = {
        "BENCH_URL": settings.base_url + scenario.path,
        "BENCH_METHOD": scenario.method,
        "BENCH_HEADERS": _headers_text(scenario.headers),
        "BENCH_BODY": scenario.body,
        "BENCH_VUS": str(
            plan.vus
            if plan is not None and not isinstance(plan, social_prep.MixPlan)
            else connections_for(settings, scenario)
        ),
        "BENCH_DURATION": f"{duration_s}s",
    }
    options: list[str] = []
    if plan is not None and not isinstance(plan, social_prep.MixPlan):
        variables.update(plan.k6_variables())
    if isinstance(plan, LoginPlan):
        # VU n sends from the n-th address of the range.
        options.append(f"--local-ips={plan.local_ips}")
    if isinstance(plan, UploadPlan):
        # Bare log lines: k6_upload.js logs what it uploaded, one line each.
        options.append("--log-format=raw")
    done = generators.run_k6(script, variables, duration_s + 60, options)
    if isinstance(plan, UploadPlan):
        delete_uploads(settings, scenario.path, plan.tokens_file, done.stderr)
    metrics = done.metrics()
    assert done.summary is not None
    reqs = metrics.get("http_reqs", {}).get("values", {})
    failed = metrics.get("http_req_failed", {}).get("values", {})
    latency = metrics.get("http_req_duration", {}).get("values", {})
    if isinstance(plan, LoginPlan) and (
        skipped := generators.counter(metrics, "bench_login_skipped")
    ):
        raise BenchError(
            f"{scenario.name}: {skipped} login(s) not sent, to stay within the rate limits: "
            f"the stack logged in faster than the {settings.login_max_rps}/s planned for. "
            "Raise BENCH_LOGIN_MAX_RPS (and BENCH_ACCOUNTS, if then asked to)"
        )
    if isinstance(plan, UploadPlan) and (
        skipped := generators.counter(metrics, "bench_upload_skipped")
    ):
        raise BenchError(
            f"{scenario.name}: {skipped} upload(s) not sent, to stay within the rate limit: "
            f"the stack took uploads faster than the {settings.upload_max_rps}/s planned "
            "for. Raise BENCH_UPLOAD_MAX_RPS"
        )
    if isinstance(plan, social_prep.ComposePlan) and (
        skipped := generators.counter(metrics, "bench_compose_skipped")
    ):
        raise BenchError(
            f"{scenario.name}: {skipped} post(s) not sent, to stay within the posts limit: "
            f"the stack took posts faster than the {settings.compose_max_rps}/s planned "
            "for. Raise BENCH_COMPOSE_MAX_RPS"
        )
    return Measurement(
        requests=int(reqs.get("count", 0)),
        duration_s=float(done.summary["state"]["testRunDurationMs"]) / 1000,
        errors=int(failed.get("passes", 0)),
        error_rate=float(failed.get("rate", 0.0)),
        p50_ms=float(latency.get("p(50)", 0.0)),
        p95_ms=float(latency.get("p(95)", 0.0)),
        p99_ms=float(latency.get("p(99)", 0.0)),
        rate_limited=generators.counter(metrics, "bench_rate_limited")
        if isinstance(plan, LoginPlan | UploadPlan | social_prep.ComposePlan)
        else None,
        unavailable=generators.counter(metrics, "bench_unavailable")
        if isinstance(plan, UploadPlan)
        else None,
    )


def realtime_scenarios(settings: Settings) -> list[str]:
    """The realtime scenarios selected (ws_latency is k6's)."""
    chosen = [name for name in WS_SCENARIOS if name in settings.scenarios]
    if "ws_latency" in chosen and "k6" not in settings.generators:
        print("bench: ws_latency runs with k6 only", file=sys.stderr)
        chosen.remove("ws_latency")
    return chosen


def measure_realtime(
    settings: Settings, chosen: list[str], block: AddressBlock, social: social_prep.Social
) -> list[dict[str, Any]]:
    """The realtime scenarios ``chosen``, one row each (see ws_bench.py)."""
    if not chosen:
        return []
    realtime = observe.find_service("realtime")
    if realtime is None:
        raise BenchError("the realtime scenarios need the realtime service of `make up`")
    if social.dataset is None:
        social.prepare(settings.social_users, settings.social_follows, block.social)
    assert social.dataset is not None
    users = social.dataset.users
    posts = social.posts_for("realtime channels", settings.ws_channels)

    def plan() -> ws_bench.WsPlan:
        social.fresh_tokens()
        return ws_bench.WsPlan([user.access_token for user in users], posts)

    rows = []
    if "ws_sockets" in chosen:
        envoy = observe.find_pid("envoy")
        rows.append(ws_bench.sockets_scenario(settings, plan(), realtime, envoy))
    if "ws_latency" in chosen:
        rows.append(ws_bench.latency_scenario(settings, plan()))
    return rows


GENERATORS: dict[str, Callable[[Settings, Scenario, int, Plan | None], Measurement]] = {
    "wrk": run_wrk,
    "k6": run_k6,
}


# --------------------------------------------------------------------------- run


def schedule(settings: Settings) -> list[tuple[str, list[Scenario]]]:
    """Per selected generator, the selected scenarios it can run; a generator
    with none is left out (its ceiling alone would tell nothing)."""
    chosen = [s for s in SCENARIOS if s.name in settings.scenarios]
    runs: list[tuple[str, list[Scenario]]] = []
    for generator in settings.generators:
        able = [s for s in chosen if generator in s.generators]
        unable = [s.name for s in chosen if generator not in s.generators]
        if unable:
            print(f"bench: {generator} skips {', '.join(unable)} (not for it)", file=sys.stderr)
        if able:
            runs.append((generator, able))
    if not runs and not realtime_scenarios(settings):
        raise BenchError(
            "nothing to measure: "
            + "; ".join(f"{s.name} runs with {', '.join(s.generators)} only" for s in chosen)
        )
    return runs


def check_token_lifetime(settings: Settings, runs: list[tuple[str, list[Scenario]]]) -> None:
    """Raise if the access token could expire before the last run that uses it
    (the uploaders' tokens are as old: they log in with it; the social
    dataset's are refreshed at the end of its preparation, as young)."""
    if not any(s.needs & {"token", "social"} for _, scenarios in runs for s in scenarios):
        return
    count = sum(1 + len(scenarios) for _, scenarios in runs)
    # A few seconds per run to start wrk or k6 (and its VUs).
    worst_s = count * (settings.warmup_s + settings.duration_s + 5)
    if worst_s > ACCESS_TOKEN_S - 60:
        raise BenchError(
            f"the run could take {worst_s}s, longer than the access token lives "
            f"({ACCESS_TOKEN_S}s): shorten BENCH_DURATION or select fewer scenarios"
        )


def check_target(
    settings: Settings, scenarios: list[Scenario], photos: Mapping[str, Path] | None = None
) -> None:
    """Send each scenario's request once; raise unless it gets the expected status.

    A scenario with a photo uploads ``photos[name]`` (one of the uploads that
    its account, account 0, is allowed), then deletes it.
    """
    # No proxy: the request must go to the loopback host itself.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for scenario in scenarios:
        url = settings.base_url + scenario.path
        body = scenario.body.encode() if scenario.body else None
        headers = dict(scenario.headers)
        if scenario.photo is not None and photos is not None:
            body, headers["Content-Type"] = multipart_body(
                photos[scenario.name].read_bytes(), "photo.jpg", "image/jpeg"
            )
        request = urllib.request.Request(  # noqa: S310 - scheme checked in check_loopback
            url, data=body, headers=headers, method=scenario.method
        )
        try:
            with opener.open(request, timeout=15) as response:
                status = int(response.status)
                reply = response.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            raise BenchError(f"{url} is not reachable ({exc}): run `make up` first") from exc
        if status != scenario.expect_status:
            raise BenchError(
                f"{scenario.method} {url} answered {status}, expected "
                f"{scenario.expect_status}: run `make up` first (dev config)"
            )
        if scenario.photo is not None:
            media_path = f"{scenario.path}/{json.loads(reply)['id']}"
            delete(settings, media_path, scenario.headers["Authorization"])


def machine_info(used: tuple[str, ...]) -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if "wrk" in used:
        info["wrk"] = generators.tool_version([generators.find_wrk(), "-v"])
    if "k6" in used:
        info["k6"] = generators.tool_version([generators.find_k6(), "version"])
    return info


def measure_all(
    settings: Settings,
    runs: list[tuple[str, list[Scenario]]],
    prepared: Prepared,
    posts: observe.ServiceProcess | None = None,
    stamp: str = "",
) -> list[dict[str, Any]]:
    """Per generator: the ceiling, then every scenario it runs. One row each.

    ``posts``, the stack's posts service (None: not found), is observed
    around the posts scenarios' measured runs (see observe.py).
    """
    rows: list[dict[str, Any]] = []
    for generator, scenarios in runs:
        run = GENERATORS[generator]
        ceiling_rps = 0.0
        for original in [CEILING, *scenarios]:
            scenario = prepared.resolve(original)
            label = f"{generator} {scenario.name}"
            watched = posts if scenario.posts else None
            if settings.warmup_s:
                print(f"bench: {label}: warm-up {settings.warmup_s}s", file=sys.stderr)
                run(settings, scenario, settings.warmup_s, prepared.plan(scenario, warmup=True))
            if watched is not None:
                # Earlier load's events (the warm-up's too) are not measured.
                waited = observe.wait_settled(watched.metrics_url)
                if waited >= 2:
                    print(
                        f"bench: {label}: waited {waited:.0f}s for posts' events", file=sys.stderr
                    )
            print(f"bench: {label}: measuring {settings.duration_s}s", file=sys.stderr)
            plan = prepared.plan(scenario, warmup=False)
            before = observe.scrape(watched.metrics_url) if watched is not None else {}
            profile = None
            if watched is not None and settings.profile and scenario.profile:
                output = RESULTS_DIR / f"profile-{stamp}-{scenario.name}-{generator}.txt"
                profile = observe.Profile(watched.pid, settings.duration_s, output)
            try:
                result = run(settings, scenario, settings.duration_s, plan)
            finally:
                profiled = profile.finish() if profile is not None else None
            after = observe.scrape(watched.metrics_url) if watched is not None else {}
            connections = connections_for(settings, scenario)
            if original is CEILING:
                ceiling_rps = result.requests_per_s
            ratio = result.requests_per_s / ceiling_rps if ceiling_rps else 0.0
            row: dict[str, Any] = {
                "scenario": scenario.name,
                "generator": generator,
                "method": scenario.method,
                "path": original.path,
                "connections": plan.active if isinstance(plan, LoginPlan) else connections,
                "requests_per_s": round(result.requests_per_s, 1),
                "p50_ms": round(result.p50_ms, 3),
                "p95_ms": round(result.p95_ms, 3),
                "p99_ms": round(result.p99_ms, 3),
                "error_rate": round(result.error_rate, 6),
                "errors": result.errors,
                "requests": result.requests,
                "duration_s": round(result.duration_s, 3),
                "ratio_to_ceiling": round(ratio, 4),
            }
            if plan is not None and result.rate_limited is not None:
                row["rate_limited"] = result.rate_limited
            if isinstance(plan, LoginPlan):
                row["login_plan"] = {
                    "vus": plan.vus,
                    "groups": plan.groups,
                    "slot_ms": plan.slot_ms,
                    "source_addresses": plan.local_ips,
                    "accounts": plan.accounts,
                    "max_logins_per_address": plan.address_budget,
                    "max_logins_per_account": plan.account_budget,
                }
            if isinstance(plan, UploadPlan) and scenario.photo is not None:
                row["unavailable"] = result.unavailable
                width, height = scenario.photo
                row["image"] = {
                    "width": width,
                    "height": height,
                    "megapixels": round(width * height / 1e6, 2),
                    "bytes": Path(plan.photo).stat().st_size,
                }
                row["upload_plan"] = {
                    "vus": plan.vus,
                    "accounts": plan.accounts,
                    "max_uploads_per_account": plan.account_budget,
                }
            if isinstance(plan, social_prep.ComposePlan):
                row["compose_plan"] = {
                    "writers": plan.writers,
                    "max_posts_per_writer": plan.per_writer,
                    "max_posts": plan.writers * plan.per_writer,
                }
            if isinstance(plan, social_prep.MixPlan):
                row["mix_plan"] = {
                    "threads": plan.threads,
                    "writers": plan.threads * plan.writers_per_thread,
                    "max_posts_per_writer": plan.per_writer,
                    "max_composes": plan.threads * plan.writers_per_thread * plan.per_writer,
                }
            if result.extra is not None:
                row["requests_by_kind"] = dict(result.extra)
            if watched is not None and after:
                row["cache"] = observe.cache_ratios(before, after)
                row["posts_replies"] = observe.replies(before, after)
            if profiled is not None:
                row["profile"] = profiled
            if scenario.goal is not None:
                missed = scenario.goal.missed(result)
                row["goal"] = {**asdict(scenario.goal), "met": not missed, "missed": missed}
            if result.rate_limited:
                print(f"bench: {label}: {result.rate_limited} replies were 429", file=sys.stderr)
            if result.unavailable:
                print(f"bench: {label}: {result.unavailable} replies were 503", file=sys.stderr)
            rows.append(row)
    return rows


def format_notes(rows: list[dict[str, Any]]) -> str:
    """What the table does not show: goals, cache hit ratios, profiles."""
    lines: list[str] = []
    for row in rows:
        label = f"{row['scenario']} ({row['generator']})"
        if "goal" in row:
            found = row["goal"]
            goal = Goal(found["requests_per_s"], found["p95_ms"], found["error_rate_below"])
            missed = ", ".join(found["missed"])
            verdict = "met" if found["met"] else f"NOT met: {missed}"
            lines.append(f"goal {label}: {goal}: {verdict}")
        if "cache" in row:
            lines.append(f"cache {label}: {observe.format_ratios(row['cache'])}")
        if "requests_by_kind" in row:
            kinds = ", ".join(f"{k} {v}" for k, v in row["requests_by_kind"].items())
            lines.append(f"mix {label}: {kinds}")
        if "profile" in row:
            profile = row["profile"]
            lines.append(f"profile {label}: {profile['file']} ({profile['samples']} samples)")
            lines += [
                f"  {entry['share']:6.1%}  {entry['function']}" for entry in profile["top_self"]
            ]
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    header = (
        "scenario",
        "generator",
        "conns",
        "requests/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "ratio",
        "goal",
    )
    cells = [header] + [
        (
            row["scenario"],
            row["generator"],
            str(row["connections"]),
            # Uploads do a few a second: a decimal tells 2.6 from 3.4.
            f"{row['requests_per_s']:.1f}"
            if row["requests_per_s"] < 100
            else f"{row['requests_per_s']:.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p95_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            f"{row['error_rate']:.2%}",
            f"{row['ratio_to_ceiling']:.2f}",
            ("met" if row["goal"]["met"] else "missed") if "goal" in row else "",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned.
    return "\n".join(
        "  ".join(
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(line)
        ).rstrip()
        for line in cells
    )


def main() -> int:
    """Run the whole benchmark; 0 on success, 1 with a message otherwise."""
    try:
        settings = load_settings(os.environ)
        started = dt.datetime.now(dt.UTC)
        runs = schedule(settings)
        ws_chosen = realtime_scenarios(settings)
        used = tuple(generator for generator, _ in runs)
        # Also fails early if a tool is missing.
        machine = machine_info(used + (("k6",) if "ws_latency" in ws_chosen else ()))
        chosen = [s for s in SCENARIOS if any(s in scenarios for _, scenarios in runs)]
        check_token_lifetime(settings, runs)
        # Reachable at all, before preparing anything.
        check_target(settings, [CEILING])
        posts = observe.find_service("posts") if any(s.posts for s in chosen) else None
        if any(s.posts for s in chosen) and posts is None:
            print(
                "bench: no posts service of `make up` found in .run/: its caches and "
                "profile are not observed",
                file=sys.stderr,
            )
        social = social_prep.Social(settings)
        with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
            block = AddressBlock.for_time(time.time())
            try:
                prepared = prepare(settings, chosen, block, Path(tmp), social)
                check_target(settings, [prepared.resolve(s) for s in chosen], prepared.photos)
                rows = measure_all(settings, runs, prepared, posts, f"{started:%Y%m%dT%H%M%SZ}")
                realtime_rows = measure_realtime(settings, ws_chosen, block, social)
            finally:
                # What the posting scenarios made, even if a run failed.
                cleaned = social.finish()
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"bench-{started:%Y%m%dT%H%M%SZ}.json"
    report = {
        "started_at": started.isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "machine": machine,
        "preparation": dict(prepared.info),
        "cleanup": cleaned,
        "results": rows,
        "realtime": realtime_rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    if rows:
        print(format_table(rows))
    if notes := format_notes(rows):
        print(f"\n{notes}")
    if realtime_rows:
        print("\n" + "\n".join(ws_bench.describe(row) for row in realtime_rows))
    print(f"\nresults: {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

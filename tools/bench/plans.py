"""Plans that keep a run under the stack's rate limits: the loopback
addresses it sends from (AddressBlock), and how each script spreads its load
over addresses, accounts and writers (LoginPlan, UploadPlan, TimelinePlan,
ComposePlan, MixPlan). A run whose plan does not fit is refused before
anything is registered.

Every post needs a media its writer uploaded and never attached, and no
user may post more than 10 in the limit's window (10/min, burst 10): each
posting run gets writers of its own, each with 10 media uploaded during
preparation, enough for BENCH_COMPOSE_MAX_RPS (create_post) or
BENCH_MIX_MAX_RPS (dsb_mix, of which 10% compose) for the run's length
(plan_compose(), plan_mix()); a run that would need more is refused, and
what the runs posted and left unused is deleted at the end
(dataset.Social.finish()).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from auth.settings import AuthSettings
from media.settings import MediaSettings
from posts.settings import PostsSettings

from .model import Scenario, Settings, connections_for
from .stackapi import BenchError

# The services' limits, read from their own settings (the defaults a stack
# started by `make up` runs with). They are GCRA buckets: a burst of `limit`,
# refilled at limit/period.
LOGIN_PER_ACCOUNT = AuthSettings.login_per_account.limit  # per minute
LOGIN_PER_ADDRESS = AuthSettings.login_per_ip.limit  # per minute
# Per user, a burst of 30 then one more a minute. Bench accounts are new in
# every run, so each has its 30 for the run.
UPLOADS_PER_ACCOUNT = MediaSettings.upload_rate.limit
# Per user, a burst of 10 posts then one more every 6 s.
POSTS_BURST = PostsSettings.create_rate.limit
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
# The DeathStarBench mix: home timeline, user timeline, compose.
MIX_SHARES = (0.6, 0.3, 0.1)


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
    kind and of the tests' 127.1.x.y) for the social dataset (dataset.py):
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


# --------------------------------------------------------------------------- logins


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


# --------------------------------------------------------------------------- uploads


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


# --------------------------------------------------------------------------- posts


@dataclass(frozen=True)
class TimelinePlan:
    """k6_timeline.js: ``vus`` readers drawn from ``users_file``."""

    vus: int
    timeline: str
    users_file: str
    base_url: str

    def k6_variables(self) -> dict[str, str]:
        return {
            "BENCH_SOCIAL_FILE": self.users_file,
            "BENCH_TIMELINE": self.timeline,
            "BENCH_BASE_URL": self.base_url,
        }


@dataclass(frozen=True)
class ComposePlan:
    """k6_compose.js: post n of the run goes to writer n mod ``writers``,
    with its media n div ``writers``; none beyond writers * per_writer."""

    vus: int
    writers: int
    per_writer: int
    pools_file: str

    def k6_variables(self) -> dict[str, str]:
        return {"BENCH_POOLS_FILE": self.pools_file, "BENCH_PER_WRITER": str(self.per_writer)}


@dataclass(frozen=True)
class MixPlan:
    """wrk_dsb_mix.lua: each of ``threads`` wrk threads posts round-robin
    over its own ``writers_per_thread`` writers (see plan_mix())."""

    threads: int
    writers_per_thread: int
    per_writer: int
    data_file: str

    def wrk_env(self) -> dict[str, str]:
        return {"BENCH_MIX_FILE": self.data_file}


def plan_compose(max_rps: int, vus: int, duration_s: int) -> int:
    """Writers one create_post run needs, each with POSTS_BURST media.

    A run starts at most BENCH_COMPOSE_MAX_RPS * ``duration_s`` posts that
    end in it, plus one per VU still in flight at its end. With the defaults
    (400 posts/s, 64 VUs): the 2 s warm-up 864 posts, 87 writers; the 10 s
    measurement 4,064, 407 writers: 494 writers and 4,940 uploads (~35 s of
    preparation on the dev box, and as many deletions after). If the stack
    posts faster, the script stops posting (bench_compose_skipped) and
    measure.py refuses the run.

    With dsb_mix's 278 (plan_mix()) and the check's, a default run takes
    773 of the 1,000 users as writers: a run right after another waits
    about a minute for the last run's writers' post budgets
    (dataset.Social.pools_for()),
    and each writer spends 10 of its 30 uploads per 30 minutes.
    """
    return math.ceil((max_rps * duration_s + vus) / POSTS_BURST)


def plan_mix(max_rps: int, threads: int, connections: int, duration_s: int) -> int:
    """Writers per wrk thread for one dsb_mix run, each with POSTS_BURST media.

    One thread starts at most n = (BENCH_MIX_MAX_RPS * ``duration_s`` +
    connections) / threads requests; each is a compose with probability 0.1,
    so it sends at most 0.1 n + 4 sd (sd = sqrt(0.09 n)) composes but once in
    ~30,000 runs. With the defaults (2,000 requests/s, 2 threads, 64
    connections): the 2 s warm-up n = 2,032, 258 composes, 26 writers per
    thread; the 10 s measurement n = 10,032, 1,124, 113 writers: 278 writers
    and 2,780 uploads (~30 s of preparation on the dev box). Budgeting for
    the goal (5,000 requests/s) would take 6,600 uploads. If a thread runs
    out, it sends a home timeline read instead and counts it; measure.py then
    refuses the run.
    """
    n = (max_rps * duration_s + connections) / threads
    share = MIX_SHARES[2]
    composes = math.ceil(share * n + 4 * math.sqrt(share * (1 - share) * n))
    return math.ceil(composes / POSTS_BURST)


# What a run may need beyond its scenario (wrk: a MixPlan only).
Plan = LoginPlan | UploadPlan | TimelinePlan | ComposePlan | MixPlan

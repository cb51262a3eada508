"""The types the bench's modules share: what a run measures and how hard
(Settings), a kind of load (Scenario) and its Goal, what one generator saw
(Measurement), and where results go. It imports none of the bench's modules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from social_stack.paths import REPO_ROOT

GENERATOR_NAMES = ("wrk", "k6")
WS_SCENARIOS = ("ws_sockets", "ws_latency")
# The web client's (web_bench.py): measured after all the others.
WEB_SCENARIOS = ("web_bundle", "web_paint")
RESULTS_DIR = REPO_ROOT / "results"


@dataclass(frozen=True)
class Goal:
    """What a scenario should reach: at least ``requests_per_s``, a p95 of at
    most ``p95_ms``, and an error rate below ``error_rate_below`` (0: no
    error at all).

    The machines differ twofold from day to day, so a rate is for a run
    whose Envoy ceiling (wrk's) is ``at_ceiling``, and :meth:`scaled` gives
    the one for the ceiling of the run at hand; ``at_ceiling`` None: a rate
    that holds on any machine (a requirement of the seed's)."""

    requests_per_s: float
    p95_ms: float
    error_rate_below: float = 0.0
    at_ceiling: float | None = 50_000

    def scaled(self, ceiling: float) -> Goal:
        """This goal for a run whose ceiling is ``ceiling`` (0: not measured,
        the goal as written)."""
        if self.at_ceiling is None or not ceiling:
            return self
        rate = self.requests_per_s * ceiling / self.at_ceiling
        return replace(self, requests_per_s=round(rate), at_ceiling=ceiling)

    def __str__(self) -> str:
        errors = (
            "no errors" if self.error_rate_below == 0 else f"errors < {self.error_rate_below:.1%}"
        )
        rate = f">= {self.requests_per_s:,.0f} req/s"
        if self.at_ceiling is not None:
            rate += f" (at a ceiling of {self.at_ceiling:,.0f})"
        return f"{rate}, p95 <= {self.p95_ms:g} ms, {errors}"

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
    logged in by the k6 script as plans.plan_login() says) and "uploads"
    (the access tokens of as many accounts as plans.plan_upload() says, and
    the JPEG ``photo``: width and height, made by prepare.make_photo()).
    ``connections`` replaces BENCH_CONNECTIONS for this scenario;
    ``generators`` are the ones able to run it.

    The posts scenarios' needs (prepare.prepare_social(), dataset.py): "feed" (the global feed
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
    web_loads: int


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


def connections_for(settings: Settings, scenario: Scenario) -> int:
    """Connections (k6: VUs sending at once) that ``scenario`` runs with."""
    return scenario.connections or settings.connections

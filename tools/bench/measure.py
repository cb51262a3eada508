"""Measurement: each scenario's request sent once to check the target
(check_target()), then wrk or k6 on each scenario, a warm-up and the
measured run, and a row of what the generator saw; the realtime scenarios'
rows come from ws_bench.py.

The posts scenarios are measured once the posts service has handled the
events earlier load (their warm-up's too) left (fan-out); their rows hold
the hit ratios of its caches over the measured run (cache_requests_total
from its /metrics), and with BENCH_PROFILE=1 global_feed and dsb_mix are
profiled with py-spy (observe.py). A scenario with a goal gets the verdict
in its row.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import generators, observe, ws_bench
from .dataset import Social
from .model import RESULTS_DIR, Measurement, Scenario, Settings, connections_for
from .plans import AddressBlock, ComposePlan, LoginPlan, MixPlan, Plan, UploadPlan
from .prepare import Prepared, delete_uploads
from .scenarios import CEILING
from .stackapi import BenchError, delete, multipart_body

HERE = Path(__file__).resolve().parent
WRK_SCRIPT = HERE / "wrk_scenario.lua"
K6_SCRIPT = HERE / "k6_scenario.js"


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


# --------------------------------------------------------------------------- generators


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
            **(plan.wrk_env() if isinstance(plan, MixPlan) else {}),
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
    if isinstance(plan, MixPlan) and extra and (skipped := extra["compose_skipped"]):
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
            if plan is not None and not isinstance(plan, MixPlan)
            else connections_for(settings, scenario)
        ),
        "BENCH_DURATION": f"{duration_s}s",
    }
    options: list[str] = []
    if plan is not None and not isinstance(plan, MixPlan):
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
    if isinstance(plan, ComposePlan) and (
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
        if isinstance(plan, LoginPlan | UploadPlan | ComposePlan)
        else None,
        unavailable=generators.counter(metrics, "bench_unavailable")
        if isinstance(plan, UploadPlan)
        else None,
    )


def measure_realtime(
    settings: Settings, chosen: list[str], block: AddressBlock, social: Social
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
    # The goals scale with wrk's ceiling (model.Goal), k6's scenarios too.
    wrk_ceiling_rps = 0.0
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
            stores_before = observe.store_counters()
            cpu_before = {**observe.cpu_seconds(), generator: observe.generator_cpu_seconds()}
            profile = None
            if watched is not None and settings.profile and scenario.profile:
                output = RESULTS_DIR / f"profile-{stamp}-{scenario.name}-{generator}.txt"
                profile = observe.Profile(watched.pid, settings.duration_s, output)
            try:
                result = run(settings, scenario, settings.duration_s, plan)
                # Before py-spy is reaped: its CPU would count as the generator's.
                cpu_after = {**observe.cpu_seconds(), generator: observe.generator_cpu_seconds()}
            finally:
                profiled = profile.finish() if profile is not None else None
            stores_after = observe.store_counters()
            after = observe.scrape(watched.metrics_url) if watched is not None else {}
            connections = connections_for(settings, scenario)
            if original is CEILING:
                ceiling_rps = result.requests_per_s
                if generator == "wrk":
                    wrk_ceiling_rps = ceiling_rps
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
                # What each component of the stack (PostgreSQL and Redis
                # included) and the load generator spent per request: the
                # capacity model's input.
                "cpu": observe.cpu_per_request(
                    cpu_before, cpu_after, result.requests, result.duration_s
                ),
                "stores": observe.store_work(
                    stores_before, stores_after, result.requests, result.duration_s
                ),
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
            if isinstance(plan, ComposePlan):
                row["compose_plan"] = {
                    "writers": plan.writers,
                    "max_posts_per_writer": plan.per_writer,
                    "max_posts": plan.writers * plan.per_writer,
                }
            if isinstance(plan, MixPlan):
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
                goal = scenario.goal.scaled(wrk_ceiling_rps)
                missed = goal.missed(result)
                row["goal"] = {**asdict(goal), "met": not missed, "missed": missed}
            if result.rate_limited:
                print(f"bench: {label}: {result.rate_limited} replies were 429", file=sys.stderr)
            if result.unavailable:
                print(f"bench: {label}: {result.unavailable} replies were 503", file=sys.stderr)
            rows.append(row)
    return rows

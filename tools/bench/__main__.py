"""Benchmark harness: load the running stack through Envoy with wrk and k6.

Run it as ``make bench`` (or ``.venv/bin/python -m tools.bench`` from the
repo root) against a stack that is already up. For every load generator it
first measures the Envoy ceiling (``/__bench/ceiling``, a ``direct_response``
of the dev config), then each scenario (scenarios.py) with the same threads
and duration, and the same connections unless the scenario sets its own
(login does: see scenarios.py), so that each scenario's ratio to the ceiling
compares like with like.

What the scenarios need (accounts, photos, the social dataset) is prepared
before anything is measured (prepare.py, dataset.py), within the rate limits
(plans.py); what the runs uploaded and posted is deleted after them. The
realtime scenarios (issue 6), ws_sockets and ws_latency, run last and print
their own lines (ws_bench.py says what they measure).

Settings come from BENCH_* environment variables (settings.py lists them).
Results go to ``results/bench-<UTC timestamp>.json`` at the repo root and a
table is printed on stdout (report.py); profiles to
``results/profile-<timestamp>-<scenario>-<generator>.txt``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

from auth.settings import AuthSettings

from . import observe
from .dataset import Social
from .measure import check_target, measure_all, measure_realtime
from .model import WEB_SCENARIOS, WS_SCENARIOS, Scenario, Settings
from .plans import AddressBlock
from .prepare import prepare
from .report import machine_info, print_report, write_results
from .scenarios import CEILING, SCENARIOS
from .settings import load_settings
from .stackapi import BenchError
from .web_bench import measure_web

# How long an access token lives (s): the runs that use one must end before.
ACCESS_TOKEN_S = AuthSettings.access_ttl


def realtime_scenarios(settings: Settings) -> list[str]:
    """The realtime scenarios selected (ws_latency is k6's)."""
    chosen = [name for name in WS_SCENARIOS if name in settings.scenarios]
    if "ws_latency" in chosen and "k6" not in settings.generators:
        print("bench: ws_latency runs with k6 only", file=sys.stderr)
        chosen.remove("ws_latency")
    return chosen


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
    web_chosen = [name for name in WEB_SCENARIOS if name in settings.scenarios]
    if not runs and not realtime_scenarios(settings) and not web_chosen:
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


def main() -> int:
    """Run the whole benchmark; 0 on success, 1 with a message otherwise."""
    try:
        settings = load_settings(os.environ)
        started = dt.datetime.now(dt.UTC)
        runs = schedule(settings)
        ws_chosen = realtime_scenarios(settings)
        web_chosen = [name for name in WEB_SCENARIOS if name in settings.scenarios]
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
        social = Social(settings)
        with tempfile.TemporaryDirectory(prefix="bench-accounts-") as tmp:
            block = AddressBlock.for_time(time.time())
            try:
                prepared = prepare(settings, chosen, block, Path(tmp), social)
                check_target(settings, [prepared.resolve(s) for s in chosen], prepared.photos)
                rows = measure_all(settings, runs, prepared, posts, f"{started:%Y%m%dT%H%M%SZ}")
                realtime_rows = measure_realtime(settings, ws_chosen, block, social)
                web_rows = measure_web(settings, web_chosen, block, social)
            finally:
                # What the posting scenarios made, even if a run failed.
                cleaned = social.finish()
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    out = write_results(
        started, settings, machine, prepared.info, cleaned, rows, realtime_rows, web_rows
    )
    print_report(rows, realtime_rows, web_rows, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The web client in `make bench` (issue 13): what a phone downloads before
the app starts, and how soon it shows a photo.

  web_bundle  the production build (web/dist, `make web`): the JavaScript and
              CSS the app's page loads before it runs (its module script,
              the modules it preloads, its stylesheets), gzipped at level 9
              as the web server sends them, and all of the app's JavaScript
              (the routes loaded later, the API reference's). Goal: initial
              JS <= 100 KB gzipped.
  web_paint   headless Chromium (web/e2e/paint.mjs), phone-sized, signed
              out at the gateway's /: the time from navigation to the first
              post image painted (Element Timing), BENCH_WEB_LOADS times in
              a new context (cold: empty cache) and as many in one context
              (warm). The feed's newest posts are made for the run (with the
              bench's photos) and deleted after it. Goal: <= 1 s cold.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import statistics
import subprocess
from typing import Any

from social_stack.web import DIST_DIR, WEB_DIR

from .dataset import Social
from .model import Settings
from .plans import AddressBlock
from .stackapi import BenchError

PAINT_SCRIPT = WEB_DIR / "e2e" / "paint.mjs"
INITIAL_JS_GOAL_KB = 100
COLD_PAINT_GOAL_MS = 1000
# Posts made for the run: the first screen of the feed has photos of its own.
PAINT_POSTS = 3


def _gzipped_kb(paths: list[str]) -> float:
    return sum(len(gzip.compress((DIST_DIR / p).read_bytes(), 9)) for p in paths) / 1024


def bundle_row() -> dict[str, Any]:
    """The sizes of the build in web/dist."""
    index = DIST_DIR / "index.html"
    if not index.is_file():
        raise BenchError("web/dist holds no build of the web client: `make web`")
    initial = re.findall(r'(?:src|href)="/(assets/[^"]+\.(?:js|css))"', index.read_text())
    every_js = sorted(p.relative_to(DIST_DIR).as_posix() for p in DIST_DIR.rglob("*.js"))
    initial_js_kb = _gzipped_kb([p for p in initial if p.endswith(".js")])
    return {
        "scenario": "web_bundle",
        "initial_js_gzip_kb": round(initial_js_kb, 1),
        "initial_css_gzip_kb": round(_gzipped_kb([p for p in initial if p.endswith(".css")]), 1),
        "all_js_gzip_kb": round(_gzipped_kb(every_js), 1),
        "js_files": len(every_js),
        "goal": f"initial JS <= {INITIAL_JS_GOAL_KB} KB gzipped",
        "met": initial_js_kb <= INITIAL_JS_GOAL_KB,
    }


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
        "max": round(ordered[-1], 1),
    }


def paint_row(settings: Settings, block: AddressBlock, social: Social) -> dict[str, Any]:
    """Navigation to the first post image painted, cold and warm."""
    if social.dataset is None:
        social.prepare(settings.social_users, settings.social_follows, block.social)
    social.posts_for("web paint", PAINT_POSTS)
    result = subprocess.run(
        ["node", str(PAINT_SCRIPT)],
        cwd=WEB_DIR,
        env={**os.environ, "BASE_URL": settings.base_url, "LOADS": str(settings.web_loads)},
        capture_output=True,
        text=True,
        timeout=60 + 10 * settings.web_loads,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"web_paint: {PAINT_SCRIPT.name} failed:\n{result.stderr[-2000:]}")
    samples = json.loads(result.stdout.splitlines()[-1])
    cold = _summary(samples["cold_ms"])
    return {
        "scenario": "web_paint",
        "loads": settings.web_loads,
        "cold_ms": cold,
        "warm_ms": _summary(samples["warm_ms"]),
        "goal": f"first image painted <= {COLD_PAINT_GOAL_MS} ms cold (median)",
        "met": cold["median"] <= COLD_PAINT_GOAL_MS,
    }


def measure_web(
    settings: Settings, chosen: list[str], block: AddressBlock, social: Social
) -> list[dict[str, Any]]:
    """The web scenarios ``chosen``, one row each."""
    rows = []
    if "web_bundle" in chosen:
        rows.append(bundle_row())
    if "web_paint" in chosen:
        rows.append(paint_row(settings, block, social))
    return rows


def describe(row: dict[str, Any]) -> str:
    verdict = "met" if row["met"] else "NOT met"
    if row["scenario"] == "web_bundle":
        return (
            f"web_bundle: initial JS {row['initial_js_gzip_kb']} KB + CSS "
            f"{row['initial_css_gzip_kb']} KB gzipped; all JS {row['all_js_gzip_kb']} KB "
            f"in {row['js_files']} files (goal {row['goal']}: {verdict})"
        )
    cold, warm = row["cold_ms"], row["warm_ms"]
    return (
        f"web_paint: first post image painted, cold median {cold['median']} ms "
        f"(p95 {cold['p95']}), warm median {warm['median']} ms (p95 {warm['p95']}) "
        f"over {row['loads']} loads each (goal {row['goal']}: {verdict})"
    )

"""The scenarios of `make bench` over HTTP (the realtime ones are
ws_bench.py's), and the ceiling every generator measures first.

The posts scenarios (issue 5) read and write a social dataset that
dataset.py makes and caches (in .run/bench/) for later runs:
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
  new_connections (wrk) the seed's "1,000,000 connections per minute" taken
  [_feed]         literally: every request on a TCP connection of its own
                  (Connection: close), to Envoy alone and to the anonymous
                  feed; requests/s is then connections/s.
The posting ones keep under the posts limit as plans.py says. The goals
(Scenario.goal: issue 18's, scaled by the run's wrk ceiling, and the seed's
connections a second) get a verdict, printed and recorded in the row.
"""

from __future__ import annotations

from .model import Goal, Scenario
from .stackapi import JSON_HEADERS

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
            goal=goal,
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
        for name, photo, goal in (
            ("2mp", (1920, 1080), Goal(requests_per_s=30, p95_ms=150)),
            ("12mp", (4000, 3000), Goal(requests_per_s=0, p95_ms=1000)),
        )
    ),
    # The posts service (issue 5). The anonymous first page of the global
    # feed is rendered once per change, and answered by the gateway's cache
    # for a second at a time (the roster's cached paths).
    Scenario(
        name="global_feed",
        path="/api/v1/posts",
        needs=frozenset({"feed"}),
        generators=("wrk",),
        # 0.6 of the ceiling (issue 18).
        goal=Goal(requests_per_s=30_000, p95_ms=50),
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
            goal=Goal(requests_per_s=8_000, p95_ms=200),
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
        goal=Goal(requests_per_s=1_000, p95_ms=200),
        posts=True,
    ),
    # A new TCP connection for every request (wrk reconnects when the gateway
    # closes): what accepting, parsing and closing costs the gateway, alone
    # and in front of the feed. The seed's 1,000,000 connections a minute is
    # 16,667 a second.
    *(
        Scenario(
            name=name,
            path=path,
            headers={"Connection": "close"},
            needs=needs,
            generators=("wrk",),
            goal=Goal(requests_per_s=16_667, p95_ms=50, at_ceiling=None),
            posts=posts,
        )
        for name, path, needs, posts in (
            ("new_connections", CEILING.path, frozenset[str](), False),
            ("new_connections_feed", "/api/v1/posts", frozenset({"feed"}), True),
        )
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

"""pytest fixtures: one real stack per test session, on free loopback ports.

Enabled by the workspace's root conftest.py. The stack honours DATABASE_URL,
REDIS_URL and S3_ENDPOINT_URL like ``make up`` does, so CI can point the
tests at servers of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from social_common.redis import create_sync_redis

from social_stack.local import Endpoints, Ports, Stack
from social_stack.testing import Account, create_account


@pytest.fixture(scope="session")
def stack_runner() -> Iterator[Stack]:
    """The running stack (to restart a part of it); everything stops when
    the session ends. A component that exits unasked is started again by a
    supervising thread of this process (:mod:`social_stack.supervisor`)."""
    # Not pytest's tmp_path: its directories are private to us, and PostgreSQL
    # may run as another user (as root, we run it as nobody).
    run_dir = Path(tempfile.mkdtemp(prefix="social-stack-"))
    running = Stack(
        run_dir,
        Ports.free(),
        tie_to_parent=True,
        durable=False,
        external=os.environ,
        # Key rotations reach the gateway within seconds, as they would in
        # minutes in production: the same mechanism on a shorter clock.
        jwks_cache_seconds=1,
        # The chart's ceiling per client address (clients here speak from
        # addresses of their own: social_stack.testing.fresh_address).
        client_rate=100,
        service_env={
            # Key rotations show within a second instead of thirty.
            "auth": {"SIGNING_KEYS_RELOAD_SECONDS": "1"},
            # Hybrid timelines show with a handful of followers, and the
            # paths past a full timeline with a few dozen posts.
            "posts": {"POSTS_CELEBRITY_FOLLOWERS": "3", "POSTS_TIMELINE_SIZE": "40"},
            # A few dozen frames behind is too slow, and a fourth channel too
            # many (the web client holds three: user, feed and one post):
            # limits easy to reach.
            "realtime": {"REALTIME_SEND_QUEUE": "32", "REALTIME_MAX_CHANNELS": "3"},
            # The sweeper runs every second; one worker and one queued upload
            # make a saturated pool easy to reach.
            "media": {
                "MEDIA_SWEEP_INTERVAL_SECONDS": "1",
                "MEDIA_WORKERS": "1",
                "MEDIA_QUEUE": "1",
            },
        },
    )
    try:
        running.start()
        running.supervise()
        yield running
    finally:
        running.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(stack_runner: Stack) -> Endpoints:
    """The running stack's endpoints."""
    return stack_runner.endpoints


@pytest.fixture
def events(stack: Endpoints) -> Iterator[redis.Redis]:
    """A client of the stack's Redis (event streams, caches, leases), replies as text."""
    with create_sync_redis(stack.redis_url, decode_responses=True) as connection:
        yield connection


@pytest.fixture
def account(stack: Endpoints) -> Account:
    """A new account, registered and logged in through the gateway."""
    return create_account(stack.gateway_url)

"""Faults the fleet bears by itself: nothing acknowledged (2xx) is lost, no
answer is a 500 or a stack trace, answers come in bounded time, and the fleet
serves again without a service being restarted.

PostgreSQL and the object store go away on the session's stack; a crashed
replica, a slow gRPC peer and a bad network are injected into a small stack
of this module's own (:func:`faulty`), whose services share the session's
PostgreSQL, Redis and S3 but reach some of them through a
:class:`~social_stack.faults.FaultProxy`.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from social_common.peers import PEER_TIMEOUT
from social_stack.faults import FaultProxy, GrpcFaults, backing_of
from social_stack.local import Endpoints, Ports, Stack, redis_cluster_asked
from social_stack.processes import is_running
from social_stack.testing import (
    Account,
    bucket_keys,
    client,
    create_account,
    create_post,
    png,
    upload_image,
    wait_until,
)

PROBLEM = "application/problem+json"


def _is_problem(response: httpx.Response, status: int = 503) -> bool:
    """A refusal as the fleet words them: the status, a problem document, no trace."""
    return (
        response.status_code == status
        and response.headers.get("content-type", "").startswith(PROBLEM)
        and response.json()["status"] == status
        and "Traceback" not in response.text
    )


@dataclass
class Outcomes:
    """What a load of requests got: the ids acknowledged, the other answers,
    how many answers were cut short."""

    acknowledged: list[str] = field(default_factory=list)
    refused: list[httpx.Response] = field(default_factory=list)
    cut: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(
        self, request: Callable[[], httpx.Response], acknowledged: str | None = None
    ) -> httpx.Response | None:
        """Sends ``request`` and records its answer; None if the answer was cut
        short (the service died while sending it, its headers already passed
        on by the gateway): the client knows as little as from a 503."""
        try:
            response = request()
        except httpx.RemoteProtocolError:
            with self.lock:
                self.cut += 1
            return None
        self.record(response, acknowledged)
        return response

    def record(self, response: httpx.Response, acknowledged: str | None = None) -> None:
        """``acknowledged``: what a 2xx acknowledged, if not the id it answers."""
        with self.lock:
            if 200 <= response.status_code < 300:
                self.acknowledged.append(acknowledged or str(response.json().get("id", "")))
            else:
                self.refused.append(response)


def _stored(admin_url: str, table: str, ids: list[str]) -> set[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT id::text FROM {table} WHERE id = ANY(%s::uuid[])",  # noqa: S608  # a constant
            (ids,),
        ).fetchall()
    return {row[0] for row in rows}


def _pids(stack_runner: Stack, *names: str) -> dict[str, int]:
    return {c.name: c.pid for c in stack_runner.components if c.name in names}


# -- PostgreSQL restarted during writes (the session's stack) ---------------


def test_a_postgresql_restart_during_writes_loses_nothing_acknowledged(
    stack: Endpoints, stack_runner: Stack, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    writers = [create_account(stack.gateway_url) for _ in range(3)]
    services = _pids(stack_runner, "posts", "messages", "media")
    messages, posts = Outcomes(), Outcomes()
    done = threading.Event()

    def write_messages(writer: Account) -> None:
        with client(stack.gateway_url) as http:
            while not done.is_set():
                messages.record(
                    http.post(
                        f"/api/v1/posts/{post['id']}/messages",
                        headers=writer.auth,
                        json={"message": f"during a restart {uuid.uuid4()}"},
                    )
                )

    def write_posts() -> None:
        with client(stack.gateway_url) as http:
            while not done.is_set():
                upload = http.post(
                    "/api/v1/media",
                    headers=account.auth,
                    files={"file": ("p.png", png(), "image/png")},
                )
                if upload.status_code != 201:
                    posts.record(upload)
                    continue
                posts.record(
                    http.post(
                        "/api/v1/posts",
                        headers=account.auth,
                        json={"caption": "restart", "media_ids": [upload.json()["id"]]},
                    )
                )

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(write_messages, w) for w in writers] + [pool.submit(write_posts)]
        try:
            wait_until(lambda: len(messages.acknowledged) >= 6, what="writes before")
            before = len(messages.acknowledged)
            stack_runner.restart("postgres")
            wait_until(
                lambda: len(messages.acknowledged) >= before + 6, timeout=30, what="writes after"
            )
        finally:
            done.set()
        for future in running:
            future.result()
    # Refused while the database was away: 503 at most (a refusal asks for a
    # retry; 429 when a writer's rate ran out), never a 500. Most wait for a
    # connection instead: the pool waits up to 5 s, longer than the restart.
    for response in messages.refused + posts.refused:
        assert _is_problem(response, response.status_code), response.text
        assert response.status_code in (503, 429), response.text
    admin = stack.database_admin_url
    assert _stored(admin, "messages.messages", messages.acknowledged) == set(messages.acknowledged)
    assert _stored(admin, "posts.posts", posts.acknowledged) == set(posts.acknowledged)
    # The services were not restarted: their pools reconnected by themselves.
    assert _pids(stack_runner, "posts", "messages", "media") == services
    create_post(stack.gateway_url, create_account(stack.gateway_url), "after the restart")


# -- a stack of this module's own, with faults between its parts -----------


@dataclass
class Faulty:
    """A stack whose two posts processes reach PostgreSQL and Redis through
    proxies, whose messages service reaches posts' gRPC through an Envoy
    with its fault filter and then a proxy (auth through the proxy alone),
    and whose media service reaches the object store through one."""

    stack: Stack
    endpoints: Endpoints
    database: FaultProxy
    redis: FaultProxy
    posts_grpc: FaultProxy
    posts_calls: GrpcFaults
    objects: FaultProxy


@pytest.fixture(scope="module")
def faulty(stack: Endpoints) -> Iterator[Faulty]:
    ports = Ports.free()
    database = FaultProxy(stack.database_admin_url.split("@")[1].split("/")[0]).start()
    redis = FaultProxy(stack.redis_url.split("//")[1].split("/")[0]).start()
    posts_grpc = FaultProxy(f"127.0.0.1:{ports.services['posts'][1]}").start()
    objects = FaultProxy(stack.s3_endpoint_url.split("//")[1].split("/")[0]).start()
    unlimited = "100000/60"
    run_dir = Path(tempfile.mkdtemp(prefix="social-faults-"))
    # Messages' calls to posts: per call through Envoy, then per connection.
    posts_calls = GrpcFaults(posts_grpc.address, run_dir).start()
    own = Stack(
        run_dir,
        ports,
        tie_to_parent=True,
        durable=False,
        external=backing_of(stack),
        replicas={"posts": 2},
        service_env={
            "posts": {
                "DATABASE_URL": database.url(stack.database_urls["posts"]),
                "REDIS_URL": redis.url(stack.redis_url),
                "RATE_LIMIT_POSTS": unlimited,
                "RATE_LIMIT_LIKES": unlimited,
            },
            "messages": {"POSTS_GRPC_ADDR": posts_calls.address, "RATE_LIMIT_MESSAGES": unlimited},
            "auth": {
                "POSTS_GRPC_ADDR": posts_grpc.address,
                "RATE_LIMIT_EXPORT_ACCOUNT": unlimited,
            },
            "media": {
                "S3_ENDPOINT_URL": objects.url(stack.s3_endpoint_url),
                "RATE_LIMIT_UPLOADS": unlimited,
                # Objects it could not delete are swept a second later.
                "MEDIA_SWEEP_INTERVAL_SECONDS": "1",
                # One deployment with the session's: its posts show in the
                # other tests' pages, whose policy takes images from there.
                "MEDIA_PUBLIC_BASE_URL": f"{stack.gateway_url}/media",
            },
        },
    )
    try:
        endpoints = own.start()
        own.supervise()
        yield Faulty(own, endpoints, database, redis, posts_grpc, posts_calls, objects)
    finally:
        own.stop()
        posts_calls.close()
        for proxy in (database, redis, posts_grpc, objects):
            proxy.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_one_of_two_posts_processes_killed_during_reads_and_writes(faulty: Faulty) -> None:
    """What a client sees: requests the killed process had accepted and not
    answered get the gateway's 503 (the gateway retries only what never
    reached a service, and a POST it cannot know the fate of is not resent),
    or an answer cut short if it died while sending it; at most one per
    request in flight, and nothing acknowledged is lost."""
    gateway = faulty.endpoints.gateway_url
    author = create_account(gateway)
    targets = [create_post(gateway, author, f"target {i}")["id"] for i in range(6)]
    media = [upload_image(gateway, author)["id"] for _ in range(6)]
    likers = [create_account(gateway) for _ in range(3)]
    likes, posts, reads = Outcomes(), Outcomes(), Outcomes()
    done = threading.Event()

    def like(liker: Account) -> None:
        with client(gateway) as http:
            for target in targets * 3:  # liking again is a no-op, still acknowledged
                likes.send(
                    partial(http.post, f"/api/v1/posts/{target}/like", headers=liker.auth),
                    f"{liker.id}/{target}",
                )

    def publish() -> None:
        with client(gateway) as http:
            for media_id in media:
                posts.send(
                    partial(
                        http.post,
                        "/api/v1/posts",
                        headers=author.auth,
                        json={"caption": "mix", "media_ids": [media_id]},
                    )
                )

    def read() -> None:
        with client(gateway) as http:
            while not done.is_set():
                reads.send(partial(http.get, "/api/v1/posts", params={"limit": 5}), "page")
                one = reads.send(partial(http.get, f"/api/v1/posts/{targets[0]}"))
                if one is not None and one.status_code == 200:
                    assert one.json()["id"] == targets[0]

    second = next(c for c in faulty.stack.components if c.name == "posts-2")
    with ThreadPoolExecutor(6) as pool:
        writers = [pool.submit(like, liker) for liker in likers] + [pool.submit(publish)]
        readers = [pool.submit(read) for _ in range(2)]
        try:
            wait_until(lambda: len(likes.acknowledged) >= 5, what="likes before the kill")
            os.kill(second.pid, signal.SIGKILL)
            for future in writers:
                future.result()
        finally:  # a writer's failure must not leave the readers reading forever
            done.set()
        for future in readers:
            future.result()
    refused = likes.refused + posts.refused + reads.refused
    for response in refused:
        assert _is_problem(response), response.text
    # At most the requests in flight at the kill (six clients).
    cut = likes.cut + posts.cut + reads.cut
    assert len(refused) + cut <= 6, (cut, [r.text for r in refused])
    with psycopg.connect(faulty.endpoints.database_admin_url, autocommit=True) as conn:
        stored = {
            f"{user}/{post}"
            for user, post in conn.execute(
                "SELECT user_id::text, post_id::text FROM posts.likes WHERE post_id = ANY(%s)",
                ([uuid.UUID(t) for t in targets],),
            ).fetchall()
        }
    assert set(likes.acknowledged) <= stored
    admin = faulty.endpoints.database_admin_url
    assert _stored(admin, "posts.posts", posts.acknowledged) == set(posts.acknowledged)
    # The supervisor started the killed replica again.
    wait_until(lambda: second.restarts == 1 and is_running(second), what="posts-2 restarted")


def test_a_peer_slower_than_the_deadline_costs_a_bounded_503(faulty: Faulty) -> None:
    gateway = faulty.endpoints.gateway_url
    account = create_account(gateway)
    post = create_post(gateway, account)
    faulty.posts_calls.delay(100, PEER_TIMEOUT + 2)

    def send(_: int) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        with client(gateway) as http:
            response = http.post(
                f"/api/v1/posts/{post['id']}/messages",
                headers=account.auth,
                json={"message": "to a slow peer"},
            )
        return response, time.monotonic() - started

    try:
        # Many at once: each waits its own deadline, none waits behind another.
        with ThreadPoolExecutor(8) as pool:
            answered = list(pool.map(send, range(8)))
    finally:
        faulty.posts_calls.clear()
    for response, took in answered:
        assert _is_problem(response), response.text
        assert took < PEER_TIMEOUT + 2.5, took
    # Late answers still in flight arrive after the latency; then all is well.
    wait_until(lambda: send(0)[0].status_code == 201, timeout=20, what="messages accepted again")


def test_a_peer_failing_some_calls_costs_those_a_503_and_loses_nothing(faulty: Faulty) -> None:
    gateway = faulty.endpoints.gateway_url
    account = create_account(gateway)
    post = create_post(gateway, account)
    sent = Outcomes()
    faulty.posts_calls.fail(50)
    try:
        with client(gateway) as http:
            for n in range(30):
                response = http.post(
                    f"/api/v1/posts/{post['id']}/messages",
                    headers=account.auth,
                    json={"message": f"through a flaky peer {n}"},
                )
                sent.record(response)
    finally:
        faulty.posts_calls.clear()
    # Half fail, at random: a run with none of either is a 2-in-a-billion chance.
    assert sent.acknowledged, "no call got through"
    assert sent.refused, "no call was failed"
    for response in sent.refused:
        assert _is_problem(response), response.text
    stored = _stored(faulty.endpoints.database_admin_url, "messages.messages", sent.acknowledged)
    assert stored == set(sent.acknowledged)


def test_an_export_while_a_part_of_it_is_away_is_a_503_not_a_partial_archive(
    faulty: Faulty,
) -> None:
    gateway = faulty.endpoints.gateway_url
    account = create_account(gateway)
    post = create_post(gateway, account)
    faulty.posts_grpc.refusing = True
    faulty.posts_grpc.reset()
    try:
        with client(gateway) as http:
            refused = http.get("/api/v1/users/profile/export", headers=account.auth)
    finally:
        faulty.posts_grpc.refusing = False
    assert _is_problem(refused), refused.text

    def whole() -> bool:
        with client(gateway) as http:
            response = http.get("/api/v1/users/profile/export", headers=account.auth)
        return response.status_code == 200 and [p["id"] for p in response.json()["posts"]] == [
            post["id"]
        ]

    wait_until(whole, timeout=30, what="the export whole again")


def _post_reads_right(gateway: str, post: dict[str, Any], account: Account) -> Callable[[], bool]:
    def check() -> bool:
        with client(gateway) as http:
            liked = http.post(f"/api/v1/posts/{post['id']}/like", headers=account.auth)
            one = http.get(f"/api/v1/posts/{post['id']}", headers=account.auth)
        for response in (liked, one):
            assert response.status_code in (200, 201, 204) or _is_problem(response), response.text
        if one.status_code != 200:
            return False
        assert one.json()["id"] == post["id"]
        assert one.json()["caption"] == post["caption"]
        return liked.status_code < 300

    return check


def test_a_bad_network_to_postgresql_and_redis_gives_right_answers_in_bounded_time(
    faulty: Faulty,
) -> None:
    gateway = faulty.endpoints.gateway_url
    account = create_account(gateway)
    post = create_post(gateway, account, "over a bad network")
    right = _post_reads_right(gateway, post, account)
    proxies = (faulty.database, faulty.redis)
    pids = _pids(faulty.stack, "posts", "posts-2")

    # Latency: slower, still right.
    for proxy in proxies:
        proxy.latency = 0.05
    try:
        assert right()
    finally:
        for proxy in proxies:
            proxy.latency = 0.0

    # A stall shorter than the deadlines: answers wait for it, then are right.
    with ThreadPoolExecutor(4) as pool:
        for proxy in proxies:
            proxy.stall()
        try:
            pending = [pool.submit(right) for _ in range(4)]
            threading.Event().wait(1.0)  # the fault's length
        finally:
            for proxy in proxies:
                proxy.flow()
        started = time.monotonic()
        outcomes = [future.result(timeout=20) for future in pending]
    assert time.monotonic() - started < 10
    assert any(outcomes)

    # Every open connection reset: at worst a 503, then right again.
    assert sum(proxy.reset() for proxy in proxies) > 0
    wait_until(right, timeout=15, what="right answers after the resets")

    # New connections refused and the open ones reset (a database gone):
    # refusals come quickly as 503s, and the fleet comes back by itself.
    for proxy in proxies:
        proxy.refusing = True
        proxy.reset()
    try:
        started = time.monotonic()
        with client(gateway) as http:
            response = http.post(f"/api/v1/posts/{post['id']}/like", headers=account.auth)
        assert _is_problem(response), response.text
        assert time.monotonic() - started < 12
    finally:
        for proxy in proxies:
            proxy.refusing = False
    wait_until(right, timeout=15, what="right answers once connections are accepted")
    assert _pids(faulty.stack, "posts", "posts-2") == pids


@pytest.mark.skipif(
    redis_cluster_asked(os.environ),
    reason="a cluster's client reaches each node where the cluster says it is, past a proxy"
    " in front of one; the failover test takes a cluster's node away",
)
def test_reads_go_on_from_postgresql_while_redis_is_away(faulty: Faulty) -> None:
    """Redis holds copies: with it away, a reader's home timeline, the global
    feed and a post answer 200 and right, what the reader likes included
    (from auth and PostgreSQL); a like, limited through Redis, is a 503."""
    gateway = faulty.endpoints.gateway_url
    reader, author = create_account(gateway), create_account(gateway)
    with client(gateway) as http:
        followed = http.post(f"/api/v1/users/{author.username}/follow", headers=reader.auth)
        assert followed.status_code == 204, followed.text
        post = create_post(gateway, author, "read while redis is away")
        liked = http.post(f"/api/v1/posts/{post['id']}/like", headers=reader.auth)
        assert liked.status_code == 200, liked.text
    faulty.redis.refusing = True
    faulty.redis.reset()
    try:
        with client(gateway) as http:
            home = http.get("/api/v1/feed", headers=reader.auth)
            one = http.get(f"/api/v1/posts/{post['id']}", headers=reader.auth)
            everyone = http.get("/api/v1/posts?limit=100", headers=reader.auth)
            again = http.post(f"/api/v1/posts/{post['id']}/like", headers=reader.auth)
    finally:
        faulty.redis.refusing = False
    for page in (home, everyone):
        assert page.status_code == 200, page.text
        shown = {item["id"]: item for item in page.json()["items"]}
        assert shown[post["id"]]["liked_by_me"] is True
    assert [item["id"] for item in home.json()["items"]] == [post["id"]]
    assert one.status_code == 200, one.text
    assert one.json()["liked_by_me"] is True
    assert _is_problem(again), again.text


# -- the object store down during uploads -----------------------------------


def _upload(gateway_url: str, account: Account) -> httpx.Response:
    with client(gateway_url) as http:
        return http.post(
            "/api/v1/media", headers=account.auth, files={"file": ("p.png", png(), "image/png")}
        )


def test_uploads_while_the_object_store_is_down_leave_no_row_and_no_object(
    faulty: Faulty,
) -> None:
    gateway, admin = faulty.endpoints.gateway_url, faulty.endpoints.database_admin_url
    account = create_account(gateway)
    keys = bucket_keys(faulty.endpoints)
    # The store is gone for media: connections refused, the open ones reset.
    faulty.objects.refusing = True
    faulty.objects.reset()
    try:
        for _ in range(2):
            started = time.monotonic()
            response = _upload(gateway, account)
            assert _is_problem(response), response.text
            assert time.monotonic() - started < 15
    finally:
        faulty.objects.refusing = False
    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM media.media WHERE owner_id = %s", (account.id,)
        ).fetchone()
    assert rows == (0,)

    def no_orphans() -> bool:
        with psycopg.connect(admin, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM media.orphan_objects").fetchone() == (0,)

    # Objects it could not delete (if any reached the store) the sweeper removes.
    wait_until(no_orphans, timeout=30, what="no orphan objects listed")
    assert bucket_keys(faulty.endpoints) == keys
    # Back by itself: the next upload is stored.
    wait_until(lambda: _upload(gateway, account).status_code == 201, what="uploads stored again")

"""The social dataset the posts scenarios read, and the fresh media that
posting scenarios need: made by the bench's preparation (prepare.py),
cleaned after.

The dataset (BENCH_SOCIAL_USERS accounts, 1,000 by default):
  * Users have a popularity rank: index 0 in every list is the most popular.
    Readers and read authors are drawn Zipf-distributed over the ranks with
    s = ZIPF_S = 1.0 (P(rank k) = k^-1 / H_n: with 1,000 users the first gets
    13% of the draws, the first 10 39%).
  * Follow graph: each user follows BENCH_SOCIAL_FOLLOWS others, distinct,
    drawn with the same Zipf weights (so the popular are followed by most:
    the first by ~94% of users with 20 each, the median user by ~2).
  * Posts, each with its own freshly uploaded 16x16 PNG
    (social_stack.testing.png(), ~90 bytes; its stored renditions a
    few hundred bytes): SEED_POPULAR_POSTS each for the SEED_POPULAR most
    popular users, SEED_OTHER_POSTS for the others (1,900 by default). Both
    are at most the post burst (10), so seeding never waits for a limit.
  * Each account registers from its own loopback address (``address(i)``,
    plans.AddressBlock.social: 5 registrations per address per 30 minutes
    are never reached) and logs in once from it (20 logins/min per address,
    5/min per account: never reached).
It is cached in CACHE_DIR (beside the stack's data, in .run/), a file per
users and follows settings: a later run with the same settings and stack
refreshes the accounts' tokens (a refresh
costs no password hash and has no rate limit), logs in (from this run's
addresses) those whose refresh token no longer works, and makes a new
dataset only if an account cannot log in either (e.g. the database was
reset). The dataset is not deleted after a run: it is what the next run
reuses (1,000 accounts, ~20,000 follows, ~1,900 posts of tiny PNGs: a few
MB in all). A dataset left behind by other settings stays too.

Posting scenarios need, per post, a media id owned by the poster and never
attached before, and no user may post more than POSTS_BURST (10) within
the GCRA window (10/min, burst 10). So each measured (or warm-up) run gets
writers of its own, each with a pool of at most POSTS_BURST media uploaded
during preparation (see Social.pools_for()): however fast they are used, no
writer posts more than its burst. Writers are picked among the dataset's
users whose budgets, as the ledger in the cache models the services' GCRA
buckets (uploads: 30, then 1/min; posts: 10, then 1 per 6 s), allow a full
pool now. After the run (Social.finish()) every pool media that was used is
deleted with its post (DELETE /api/v1/posts/{id}, which deletes its media),
and every unused one directly (DELETE /api/v1/media/{id}).
"""

from __future__ import annotations

import json
import math
import random
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from media.settings import MediaSettings
from posts.settings import PostsSettings
from social_stack.paths import DEFAULT_RUN_DIR
from social_stack.testing import png

from . import stackapi
from .plans import POSTS_BURST

ZIPF_S = 1.0
CACHE_DIR = DEFAULT_RUN_DIR / "bench"
CACHE_VERSION = 1
# The services' limits (GCRA: a burst of `limit`, refilled at limit/period);
# the posts burst is plans.POSTS_BURST.
POST_INTERVAL_S = PostsSettings.create_rate.period / POSTS_BURST
UPLOADS_BURST = MediaSettings.upload_rate.limit
UPLOAD_INTERVAL_S = MediaSettings.upload_rate.period / UPLOADS_BURST
# Uploads a writer keeps for retries (a 503 spends one of its budget too).
UPLOAD_SPARE = 2
# Preparation waits this long at most for writers whose budgets refill.
WRITERS_MAX_WAIT_S = 150.0
# The ledger counts a spending this much later than it was: clocks and
# request times are not exact.
LEDGER_SLACK_S = 5.0
SEED_POPULAR = 100
SEED_POPULAR_POSTS = 10
SEED_OTHER_POSTS = 1
# The global feed scenario reads a full first page.
FEED_PAGE = 20
# Requests in flight at once during preparation; uploads: the media
# service's workers plus its queue (beyond that it answers 503).
PREP_THREADS = 8
UPLOAD_THREADS = MediaSettings.workers + MediaSettings.queue
# A page of one author's posts when looking for what to delete.
PAGE_LIMIT = 40
PNG = png()
# A token older than this is refreshed before the load generators get it.
TOKEN_MAX_AGE_S = 30.0

T = TypeVar("T")
R = TypeVar("R")


def log(message: str) -> None:
    print(f"bench: social: {message}", file=sys.stderr)


def parallel(
    what: str, items: Sequence[T], work: Callable[[T], R], threads: int = PREP_THREADS
) -> list[R]:
    """``work`` on every item, ``threads`` at a time, with progress lines."""
    if not items:
        return []
    step = max(1, len(items) // 5)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(work, item) for item in items]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                future.result()
                if done % step == 0 or done == len(items):
                    log(f"{what}: {done}/{len(items)}")
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return [future.result() for future in futures]


def zipf_cdf(n: int, s: float = ZIPF_S) -> list[float]:
    """Cumulative Zipf probabilities of ranks 1..n (the last is 1.0)."""
    weights = [1.0 / (rank**s) for rank in range(1, n + 1)]
    total = sum(weights)
    cdf: list[float] = []
    running = 0.0
    for weight in weights:
        running += weight
        cdf.append(running / total)
    cdf[-1] = 1.0
    return cdf


def seed_posts(rank: int) -> int:
    """How many posts the dataset's user of ``rank`` (0 = most popular) has."""
    return SEED_POPULAR_POSTS if rank < SEED_POPULAR else SEED_OTHER_POSTS


# --------------------------------------------------------------------------- dataset


@dataclass
class User:
    """One account of the dataset, with the ledger of its rate-limit budgets:
    the TAT (unix s) of its upload and post GCRA buckets, as the services
    would have them after what the bench spent."""

    username: str
    password: str
    id: str = ""
    refresh_token: str = ""
    upload_tat: float = 0.0
    post_tat: float = 0.0
    access_token: str = field(default="", repr=False)
    token_at: float = 0.0

    @staticmethod
    def _left(tat: float, interval: float, burst: int, now: float) -> int:
        return math.floor((now + burst * interval - max(tat, now)) / interval)

    def uploads_left(self, now: float) -> int:
        return self._left(self.upload_tat, UPLOAD_INTERVAL_S, UPLOADS_BURST, now)

    def posts_left(self, now: float) -> int:
        return self._left(self.post_tat, POST_INTERVAL_S, POSTS_BURST, now)

    def able_at(self, posts: int, uploads: int) -> float:
        """When (unix s) this user has ``posts`` posts and ``uploads`` uploads
        left (GCRA: n left once TAT - (burst - n) * interval has passed)."""
        return max(
            self.post_tat - (POSTS_BURST - posts) * POST_INTERVAL_S,
            self.upload_tat - (UPLOADS_BURST - uploads) * UPLOAD_INTERVAL_S,
        )

    def spent(self, uploads: int, posts: int) -> None:
        """Record ``uploads`` and ``posts`` spent by now (counted a little later)."""
        at = time.time() + LEDGER_SLACK_S
        self.upload_tat = max(self.upload_tat, at) + uploads * UPLOAD_INTERVAL_S
        self.post_tat = max(self.post_tat, at) + posts * POST_INTERVAL_S

    def cached(self) -> dict[str, Any]:
        data = asdict(self)
        for transient in ("access_token", "token_at"):
            data.pop(transient)
        return data


@dataclass
class Dataset:
    base_url: str
    run_id: str
    follows: int
    users: list[User]
    graph_done: bool = False
    seeded: bool = False

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": CACHE_VERSION,
            "base_url": self.base_url,
            "run_id": self.run_id,
            "follows": self.follows,
            "graph_done": self.graph_done,
            "seeded": self.seeded,
            "users": [user.cached() for user in self.users],
        }
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(data))
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> Dataset | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION:
            return None
        try:
            return cls(
                base_url=data["base_url"],
                run_id=data["run_id"],
                follows=data["follows"],
                users=[User(**user) for user in data["users"]],
                graph_done=data["graph_done"],
                seeded=data["seeded"],
            )
        except (KeyError, TypeError):
            return None


@dataclass
class Pool:
    """A writer and the fresh media it may post, one post each."""

    user: User
    size: int
    media: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- the session


class Social:
    """The dataset and the pools of one bench run; finish() cleans up."""

    def __init__(self, target: stackapi.Target, cache_dir: Path = CACHE_DIR) -> None:
        self.target = target
        self.cache_dir = cache_dir
        self.cache_file = cache_dir / "social.json"  # named by prepare()
        self.dataset: Dataset | None = None
        self.pools: list[Pool] = []
        self._taken: set[str] = set()
        # Upload attempts per user not yet in the ledger (a 503 spends one too).
        self._tries: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _upload(self, user: User) -> str:
        """Upload the tiny PNG as ``user``; the media id."""
        media_id, tries = stackapi.upload(self.target, user.access_token, PNG, "p.png", "image/png")
        with self._lock:
            self._tries[user.username] += tries
        return media_id

    def _charge(self, user: User, posts: int) -> None:
        """Put ``user``'s upload attempts and ``posts`` in the ledger."""
        with self._lock:
            tries = self._tries.pop(user.username, 0)
        user.spent(tries, posts)

    # -- accounts ------------------------------------------------------------

    def prepare(self, count: int, follows: int, address: Callable[[int], str]) -> Dataset:
        """The dataset of ``count`` users following ``follows`` each, from the
        cache when it still works; users log in from ``address(rank)``."""
        self.cache_file = self.cache_dir / f"social-{count}-users-{follows}-follows.json"
        dataset = Dataset.load(self.cache_file)
        if dataset is not None and (
            dataset.base_url != self.target.base_url
            or len(dataset.users) != count
            or dataset.follows != follows
        ):
            log(f"{self.cache_file} is of another stack: making a new dataset")
            dataset = None
        if dataset is not None:
            log(f"reusing the cached dataset {dataset.run_id} ({count} users)")
            if not self._sign_in(dataset, address):
                log("its accounts no longer log in (a new database?): making a new dataset")
                dataset = None
        new = dataset is None
        if dataset is None:
            dataset = self._register(count, follows, address)
        self.dataset = dataset
        if not dataset.graph_done:
            self._follow_graph(dataset)
        if new or not dataset.seeded or not self._seeds_present(dataset):
            # A new dataset has no posts; a cached one's are counted first.
            self._seed(dataset, fresh=new)
        return dataset

    def _register(self, count: int, follows: int, address: Callable[[int], str]) -> Dataset:
        run_id = secrets.token_hex(3)
        users = [
            User(f"bench_s{run_id}_{rank:04d}", "bench-" + secrets.token_hex(12))
            for rank in range(count)
        ]
        dataset = Dataset(self.target.base_url, run_id, follows, users)
        log(f"registering {count} users from {address(0)}..{address(count - 1)}")

        def register(rank: int) -> None:
            user = users[rank]
            user.id = stackapi.register(self.target, user.username, user.password, address(rank))

        parallel("registered", range(count), register)
        dataset.save(self.cache_file)
        if not self._sign_in(dataset, address, login_all=True):
            raise stackapi.BenchError("some of the users just registered cannot log in")
        return dataset

    def _sign_in(
        self, dataset: Dataset, address: Callable[[int], str], login_all: bool = False
    ) -> bool:
        """Fresh tokens for every user (a refresh, else a login from its
        address); False if some user cannot log in. Saves the cache: refresh
        tokens rotate."""

        def sign_in(rank: int) -> bool:
            user = dataset.users[rank]
            tokens = None
            if not login_all and user.refresh_token:
                tokens = stackapi.refresh(self.target, user.refresh_token)
            if tokens is None:
                try:
                    tokens = stackapi.login_session(
                        self.target, user.username, user.password, address(rank)
                    )
                except stackapi.BenchError:
                    return False
            user.access_token, user.refresh_token = tokens
            user.token_at = time.time()
            return True

        what = "logged in" if login_all else "tokens refreshed"
        try:
            return all(parallel(what, range(len(dataset.users)), sign_in))
        finally:
            dataset.save(self.cache_file)

    def fresh_tokens(self, users: Iterable[User] | None = None) -> None:
        """Refresh the access tokens older than TOKEN_MAX_AGE_S (of ``users``,
        else of the whole dataset), so that those the load generators get
        outlive the run (they live 15 minutes)."""
        if self.dataset is None:
            return
        stale = [
            u
            for u in (self.dataset.users if users is None else users)
            if time.time() - u.token_at > TOKEN_MAX_AGE_S
        ]

        def renew(user: User) -> None:
            tokens = stackapi.refresh(self.target, user.refresh_token)
            if tokens is None:
                raise stackapi.BenchError(f"{user.username}: its refresh token no longer works")
            user.access_token, user.refresh_token = tokens
            user.token_at = time.time()

        try:
            parallel("tokens refreshed", stale, renew)
        finally:
            self.dataset.save(self.cache_file)

    # -- follows and posts ---------------------------------------------------

    def _follow_graph(self, dataset: Dataset) -> None:
        users = dataset.users
        n = len(users)
        cdf = zipf_cdf(n)
        rng = random.Random(dataset.run_id)  # noqa: S311 - a graph, not secrets
        pairs: list[tuple[int, int]] = []
        for rank in range(n):
            followees: set[int] = set()
            while len(followees) < min(dataset.follows, n - 1):
                (pick,) = rng.choices(range(n), cum_weights=cdf)
                if pick != rank:
                    followees.add(pick)
            pairs += [(rank, followee) for followee in sorted(followees)]
        log(f"following: {len(pairs)} follows ({dataset.follows} per user, Zipf s={ZIPF_S})")
        parallel(
            "followed",
            pairs,
            lambda p: stackapi.follow(self.target, users[p[0]].access_token, users[p[1]].username),
        )
        dataset.graph_done = True
        dataset.save(self.cache_file)

    def _post_count(self, user: User) -> int:
        page = stackapi.get_json(self.target, f"/api/v1/users/{user.username}/posts?limit=40")
        return 0 if page is None else len(page["items"])

    def _seeds_present(self, dataset: Dataset) -> bool:
        """A spot check of a cached dataset: the most popular user's posts."""
        return self._post_count(dataset.users[0]) >= seed_posts(0)

    def _seed(self, dataset: Dataset, *, fresh: bool) -> None:
        users = dataset.users
        counts = (
            [0] * len(users)
            if fresh
            else parallel("posts counted", range(len(users)), lambda r: self._post_count(users[r]))
        )
        now = time.time()
        tasks: list[User] = []
        short = 0
        for rank, user in enumerate(users):
            missing = max(seed_posts(rank) - counts[rank], 0)
            budget = max(min(missing, user.posts_left(now), user.uploads_left(now)), 0)
            short += missing - budget
            tasks += [user] * budget
        log(f"posting {len(tasks)} posts, each with a fresh PNG")
        if short:
            log(f"{short} more are missing, beyond the users' budgets now: a later run posts them")

        def post(user: User) -> None:
            media_id = self._upload(user)
            stackapi.create_post(self.target, user.access_token, media_id, "bench seed post")

        try:
            parallel("posted", tasks, post, threads=UPLOAD_THREADS)
        finally:
            posts = Counter(user.username for user in tasks)
            for user in users:
                if user.username in posts:
                    self._charge(user, posts[user.username])
            dataset.save(self.cache_file)
        dataset.seeded = not short
        dataset.save(self.cache_file)

    def ensure_feed(self, address: Callable[[int], str]) -> int:
        """Make sure the global feed has a full first page: if not, post what
        is missing as new accounts (at most POSTS_BURST each) registered from
        ``address(i)``. Those posts stay: they are the feed. Returns how many
        were made."""
        page = stackapi.get_json(self.target, f"/api/v1/posts?limit={FEED_PAGE}")
        missing = FEED_PAGE - len(page["items"])
        if missing <= 0:
            return 0
        authors = math.ceil(missing / POSTS_BURST)
        run_id = secrets.token_hex(3)
        log(f"the global feed has {FEED_PAGE - missing} posts: {authors} user(s) post {missing}")
        for i in range(authors):
            username, password = f"bench_f{run_id}_{i}", "bench-" + secrets.token_hex(12)
            stackapi.register(self.target, username, password, address(i))
            token = stackapi.login(self.target, username, password, address(i))
            count = min(POSTS_BURST, missing - i * POSTS_BURST)
            for _ in range(count):
                media_id, _tries = stackapi.upload(self.target, token, PNG, "p.png", "image/png")
                stackapi.create_post(self.target, token, media_id, "bench feed post")
        return missing

    # -- writers' pools ------------------------------------------------------

    def pools_for(self, what: str, writers: int, per_writer: int = POSTS_BURST) -> list[Pool]:
        """``writers`` writers, none used before in this run, each with
        ``per_writer`` media uploaded now (uploads in flight: UPLOAD_THREADS)."""
        if self.dataset is None:
            raise stackapi.BenchError("pools_for() before prepare()")
        free = [u for u in self.dataset.users if u.username not in self._taken]
        ready = sorted(u.able_at(per_writer, per_writer + UPLOAD_SPARE) for u in free)
        wait = ready[writers - 1] - time.time() if len(ready) >= writers else math.inf
        if wait > WRITERS_MAX_WAIT_S:
            raise stackapi.BenchError(
                f"{what}: needs {writers} writers with {per_writer} posts and "
                f"{per_writer + UPLOAD_SPARE} uploads left each; of the "
                f"{len(self.dataset.users)} dataset users, not enough have them "
                f"{'ever' if wait == math.inf else f'within {wait:.0f}s'} (uploads refill "
                f"1/min, posts 1 per {POST_INTERVAL_S:g}s): wait, shorten BENCH_DURATION, "
                "lower BENCH_COMPOSE_MAX_RPS / BENCH_MIX_MAX_RPS or raise BENCH_SOCIAL_USERS"
            )
        if wait > 0:
            # The last run's writers, typically: their post budgets refill in a minute.
            log(f"{what}: waiting {wait:.0f}s for enough writers' budgets to refill")
            time.sleep(wait + 0.5)
        now = time.time()
        able = [
            u
            for u in free
            if u.posts_left(now) >= per_writer and u.uploads_left(now) >= per_writer + UPLOAD_SPARE
        ]
        # Those with the most upload budget first, so repeated runs take turns.
        rng = random.Random()  # noqa: S311 - an order, not secrets
        rng.shuffle(able)
        able.sort(key=lambda u: -u.uploads_left(now))
        if len(able) < writers:
            raise stackapi.BenchError(f"{what}: {len(able)} writers able, not {writers}")
        chosen = [Pool(user, per_writer) for user in able[:writers]]
        self._taken.update(pool.user.username for pool in chosen)
        self.pools += chosen
        self.fresh_tokens([pool.user for pool in chosen])
        log(f"{what}: uploading {writers * per_writer} PNGs for {writers} writers")

        def upload(pool: Pool) -> None:
            media_id = self._upload(pool.user)
            with self._lock:
                pool.media.append(media_id)

        try:
            tasks = [pool for pool in chosen for _ in range(per_writer)]
            parallel(f"{what}: uploaded", tasks, upload, threads=UPLOAD_THREADS)
        finally:
            for pool in chosen:
                self._charge(pool.user, 0)
            self.dataset.save(self.cache_file)
        return chosen

    def posts_for(self, what: str, count: int) -> list[str]:
        """``count`` new posts, by writers of their own; finish() deletes them
        (and with them what was said on them)."""
        per_writer = min(POSTS_BURST, count)
        pools = self.pools_for(what, math.ceil(count / per_writer), per_writer)
        media = [(pool.user, media_id) for pool in pools for media_id in pool.media][:count]
        return parallel(
            f"{what}: posted",
            media,
            lambda m: stackapi.create_post(self.target, m[0].access_token, m[1], "bench channel"),
        )

    def finish(self) -> dict[str, int]:
        """Delete what the run posted from the pools and the media it left
        unused; charge the writers' post budgets in the ledger. Returns counts."""
        if self.dataset is None or not self.pools:
            return {}
        self.fresh_tokens([pool.user for pool in self.pools])
        media = [(pool, media_id) for pool in self.pools for media_id in pool.media]
        statuses = parallel(
            "cleanup: media deleted",
            media,
            lambda m: stackapi.delete(
                self.target, f"{stackapi.MEDIA_PATH}/{m[1]}", f"Bearer {m[0].user.access_token}"
            ),
        )
        attached: dict[int, set[str]] = {}
        for (pool, media_id), status in zip(media, statuses, strict=True):
            if status == 409:  # part of a post: deleting the post deletes it
                attached.setdefault(id(pool), set()).add(media_id)
        by_id = {id(pool): pool for pool in self.pools}
        posts = [
            (by_id[key], post_id)
            for key, ids in attached.items()
            for post_id in self._posts_with(by_id[key].user, ids)
        ]
        deleted = parallel(
            "cleanup: posts deleted",
            posts,
            lambda p: stackapi.delete(
                self.target, f"{stackapi.POSTS_PATH}/{p[1]}", f"Bearer {p[0].user.access_token}"
            ),
        )
        for pool in self.pools:
            # Every media could have been posted: charge the whole pool.
            pool.user.spent(0, pool.size)
        self.dataset.save(self.cache_file)
        counts = {
            "media_deleted": sum(s == 204 for s in statuses),
            "posts_deleted": sum(s == 204 for s in deleted),
            "posts_found": len(posts),
            "posts_made": sum(len(ids) for ids in attached.values()),
        }
        # A deleted post takes its (one) media with it.
        left = len(media) - counts["media_deleted"] - counts["posts_deleted"]
        if left:
            print(
                f"bench: cleanup: {left} of {len(media)} pool media not deleted (statuses "
                f"{sorted(set(statuses) | set(deleted))}); unattached ones are swept after 24 h",
                file=sys.stderr,
            )
        self.pools = []
        return counts

    def _posts_with(self, user: User, media_ids: set[str]) -> list[str]:
        """The ids of ``user``'s posts that hold one of ``media_ids``."""
        found: list[str] = []
        wanted = set(media_ids)
        cursor = ""
        while wanted:
            path = f"/api/v1/users/{user.username}/posts?limit={PAGE_LIMIT}{cursor}"
            page = stackapi.get_json(self.target, path, user.access_token)
            if page is None:
                break
            for post in page["items"]:
                ids = {m["id"] for m in post["media"]}
                if ids & wanted:
                    found.append(post["id"])
                    wanted -= ids
            if not page["next_cursor"]:
                break
            cursor = f"&cursor={page['next_cursor']}"
        return found

    # -- files for the load generators ---------------------------------------

    def write_users_file(self, path: Path) -> None:
        """For k6_timeline.js: users by rank, token, and the Zipf CDF."""
        if self.dataset is None:
            raise stackapi.BenchError("write_users_file() before prepare()")
        cdf = zipf_cdf(len(self.dataset.users))
        users = [
            {"u": u.username, "t": u.access_token, "c": c}
            for u, c in zip(self.dataset.users, cdf, strict=True)
        ]
        path.write_text(json.dumps({"users": users}))

    @staticmethod
    def write_pools_file(pools: Sequence[Pool], path: Path) -> None:
        """For k6_compose.js: each writer's token and media ids."""
        writers = [{"t": p.user.access_token, "m": p.media} for p in pools]
        path.write_text(json.dumps({"writers": writers}))

    def write_mix_file(self, threads: Sequence[Sequence[Pool]], path: Path) -> None:
        """For wrk_dsb_mix.lua, a line format its Lua reads without a JSON
        library: ``u <cdf> <username> <token>`` per user by rank, then
        ``w <thread> <token> <media id>...`` per writer of each wrk thread."""
        if self.dataset is None:
            raise stackapi.BenchError("write_mix_file() before prepare()")
        cdf = zipf_cdf(len(self.dataset.users))
        lines = [
            f"u {c:.9f} {u.username} {u.access_token}"
            for u, c in zip(self.dataset.users, cdf, strict=True)
        ]
        for thread, pools in enumerate(threads):
            lines += [f"w {thread} {p.user.access_token} {' '.join(p.media)}" for p in pools]
        path.write_text("\n".join(lines) + "\n")

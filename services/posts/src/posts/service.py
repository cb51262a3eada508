"""The posts service's rules, and how it is laid out.

Its work is in three parts: posting, deleting and liking (posts.writes),
the feeds (posts.feeds), and the events that keep home timelines and
counters current (posts.events). What clients see is shaped in posts.views;
posts.store holds the SQL, posts.cache the cached posts and the announcement
of their changes, posts.timelines and posts.likes the rest of Redis.

An id is a ``uuid.UUID`` from where it comes in (a path, a cursor, a token,
a request body, an event, a peer's answer naming one) to Postgres. Its text
is made where text is what is needed: Redis keys and members, the cached
documents (keyed by the text of their ids, as timelines hold them), JSON and
protobuf fields. Lists of ids that come as text and go on as text (a home
timeline's, the followers auth pages through) are parsed only where they go
to Postgres; a feed page read from Postgres is kept as the text of its ids
(the documents' keys), so reading it again converts nothing.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

from social_common.errors import Problem
from social_common.logging import get_logger
from social_common.redis import UNAVAILABLE as REDIS_UNAVAILABLE

log = get_logger(__name__)

MAX_CAPTION = 2200
MAX_MEDIA = 4


def not_found() -> Problem:
    return Problem(404, "post_not_found", "No such post.")


@contextlib.contextmanager
def after_commit(post_id: uuid.UUID) -> Iterator[None]:
    """Cache and timeline updates after a commit: the change stands whatever
    happens to them. If Redis fails here, this process's L1 holds the change
    for ``local_cache_ms``; other processes may show the previous version
    until its Redis entry expires (``shared_cache_seconds``); the events (in
    the outbox, never lost) still fan out."""
    try:
        yield
    except REDIS_UNAVAILABLE as exc:
        log.warning("after_commit_failed", post_id=str(post_id), error=str(exc))

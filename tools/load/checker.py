"""After a load test: was anything the clients were told lost?

  * Every write answered 2xx (load_acked: a post, a message, a like) must be
    in PostgreSQL, the services' own tables, read directly: no cache or API
    between the check and the truth.
  * Every watch (a watcher's hold of post:<id>, across its reconnects) must
    have received every message of that post created while it held it,
    from its first subscription's ack to the end of its hold; the watcher
    kept its socket DRAIN_S (10 s, load.js) longer for what was in flight.
    created_at is the transaction's start, so a message created after the
    ack was committed after it. A watch the server told of a gap (it no
    longer had what a reconnect asked for) is counted apart: the client was
    told, and refetches over REST.

Any acknowledged write lost, or any message silently missed, fails the test.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import psycopg

from .points import Points


@dataclass
class Check:
    # Per kind: acknowledged, and of those, not found.
    acked: Counter[str] = field(default_factory=Counter)
    lost: Counter[str] = field(default_factory=Counter)
    lost_ids: list[str] = field(default_factory=list)
    watches: int = 0
    expected: int = 0
    received: int = 0
    missed: int = 0
    # Messages missed by watches that were told of a gap.
    missed_after_gap: int = 0
    gap_watches: int = 0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.missed

    def to_json(self) -> dict[str, object]:
        return {
            "acked": dict(self.acked),
            "lost": dict(self.lost),
            "lost_ids": self.lost_ids[:50],
            "watches": self.watches,
            "expected": self.expected,
            "received": self.received,
            "missed": self.missed,
            "missed_after_gap": self.missed_after_gap,
            "gap_watches": self.gap_watches,
            "ok": self.ok,
        }


def _present(conn: psycopg.Connection, query: str, ids: list[str]) -> set[str]:
    return {str(row[0]) for row in conn.execute(query, (ids,))} if ids else set()


def check(points: Points, database_admin_url: str) -> Check:
    result = Check()
    by_kind: dict[str, list[str]] = defaultdict(list)
    for ack in points.acks:
        by_kind[ack.kind].append(ack.id)
    with psycopg.connect(database_admin_url, autocommit=True) as conn:
        found = {
            "post": _present(
                conn, "SELECT id FROM posts.posts WHERE id = ANY(%s::uuid[])", by_kind["post"]
            ),
            "message": _present(
                conn,
                "SELECT id FROM messages.messages WHERE id = ANY(%s::uuid[])",
                by_kind["message"],
            ),
            # A like's id is "<post id>:<username>".
            "like": _present(
                conn,
                "SELECT a.id FROM unnest(%s::text[]) AS a(id)"
                " JOIN auth.users u ON u.username = split_part(a.id, ':', 2)"
                " JOIN posts.likes l"
                " ON l.post_id = split_part(a.id, ':', 1)::uuid AND l.user_id = u.id",
                by_kind["like"],
            ),
        }
        for kind, ids in by_kind.items():
            unique = set(ids)
            result.acked[kind] = len(unique)
            missing = unique - found.get(kind, set())
            if missing:
                result.lost[kind] = len(missing)
                result.lost_ids += sorted(f"{kind} {i}" for i in missing)
        created: dict[str, list[tuple[str, float]]] = defaultdict(list)
        posts = sorted({w.post for w in points.watches})
        if posts:
            rows = conn.execute(
                "SELECT post_id::text, id::text, extract(epoch FROM created_at)"
                " FROM messages.messages WHERE post_id = ANY(%s::uuid[])"
                " AND created_at >= to_timestamp(%s)",
                (posts, min(w.start for w in points.watches)),
            )
            for post, message, at in rows:
                created[post].append((message, float(at)))
    for watch in points.watches:
        result.watches += 1
        told = watch.id in points.gaps
        result.gap_watches += told
        for message, at in created[watch.post]:
            if not watch.start <= at <= watch.end:
                continue
            result.expected += 1
            if (watch.id, message) in points.received:
                result.received += 1
            elif told:
                result.missed_after_gap += 1
            else:
                result.missed += 1
    return result

"""The posts service's own settings, read from the environment at start."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.ratelimit import Rate, env_rate
from social_common.settings import env_int


@dataclass(frozen=True)
class PostsConfig:
    # The seed's limit: 10 posts per minute per user.
    create_rate: Rate = Rate(10, 60)
    like_rate: Rate = Rate(120, 60)
    # Home timelines keep this many newest post ids each (older pages read Postgres).
    timeline_size: int = 800
    # A timeline nobody reads for this long expires; the next read rebuilds it.
    timeline_ttl_seconds: int = 7 * 24 * 3600
    # Authors with at least this many followers are not fanned out on write:
    # their posts are merged into their followers' timelines at read time.
    celebrity_followers: int = 10_000
    # Followers fetched from auth per gRPC page during fan-out.
    fanout_page: int = 1000
    # The in-process cache (L1): entries live this long at most, this many at once.
    local_cache_ms: int = 2000
    local_cache_entries: int = 100_000
    # The shared cache in Redis (L2): entries are replaced on every change;
    # the lifetime bounds how long an update lost to a Redis failure shows.
    shared_cache_seconds: int = 300
    # Authors' public profiles (username, display name) are cached this long.
    author_cache_seconds: int = 60

    @classmethod
    def from_env(cls) -> PostsConfig:
        return cls(
            create_rate=env_rate("RATE_LIMIT_POSTS", cls.create_rate),
            like_rate=env_rate("RATE_LIMIT_LIKES", cls.like_rate),
            timeline_size=env_int("POSTS_TIMELINE_SIZE", cls.timeline_size, minimum=40),
            timeline_ttl_seconds=env_int(
                "POSTS_TIMELINE_TTL_SECONDS", cls.timeline_ttl_seconds, minimum=60
            ),
            celebrity_followers=env_int(
                "POSTS_CELEBRITY_FOLLOWERS", cls.celebrity_followers, minimum=1
            ),
            fanout_page=env_int("POSTS_FANOUT_PAGE", cls.fanout_page, minimum=1, maximum=5000),
            local_cache_ms=env_int("POSTS_LOCAL_CACHE_MS", cls.local_cache_ms, minimum=0),
            local_cache_entries=env_int(
                "POSTS_LOCAL_CACHE_ENTRIES", cls.local_cache_entries, minimum=0
            ),
            shared_cache_seconds=env_int(
                "POSTS_SHARED_CACHE_SECONDS", cls.shared_cache_seconds, minimum=1
            ),
            author_cache_seconds=env_int(
                "POSTS_AUTHOR_CACHE_SECONDS", cls.author_cache_seconds, minimum=1
            ),
        )

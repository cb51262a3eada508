"""The posts service's settings: the shared ones and its own."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.ratelimit import Rate
from social_common.settings import Settings, setting


@dataclass(frozen=True, kw_only=True)
class PostsSettings(Settings):
    # The seed's limit: 10 posts per minute per user.
    create_rate: Rate = setting("RATE_LIMIT_POSTS", Rate(10, 60))
    like_rate: Rate = setting("RATE_LIMIT_LIKES", Rate(120, 60))
    # Home timelines keep this many newest post ids each (older pages read Postgres).
    timeline_size: int = setting("POSTS_TIMELINE_SIZE", 800, minimum=40)
    # A timeline nobody reads for this long expires; the next read rebuilds it.
    timeline_ttl_seconds: int = setting("POSTS_TIMELINE_TTL_SECONDS", 7 * 24 * 3600, minimum=60)
    # Authors with at least this many followers are not fanned out on write:
    # their posts are merged into their followers' timelines at read time.
    celebrity_followers: int = setting("POSTS_CELEBRITY_FOLLOWERS", 10_000, minimum=1)
    # Followers fetched from auth per gRPC page during fan-out.
    fanout_page: int = setting("POSTS_FANOUT_PAGE", 1000, minimum=1, maximum=5000)
    # The in-process cache (L1): entries live this long at most, this many at once.
    local_cache_ms: int = setting("POSTS_LOCAL_CACHE_MS", 2000, minimum=0)
    local_cache_entries: int = setting("POSTS_LOCAL_CACHE_ENTRIES", 100_000, minimum=0)
    # The shared cache in Redis (L2): entries are replaced on every change;
    # the lifetime bounds how long an update lost to a Redis failure shows.
    shared_cache_seconds: int = setting("POSTS_SHARED_CACHE_SECONDS", 300, minimum=1)
    # How long the gateway may answer the global feed's first page to
    # anonymous readers from its own copy (s-maxage): how old a page a
    # newcomer may see; 0 never.
    gateway_cache_seconds: int = setting("POSTS_GATEWAY_CACHE_SECONDS", 1, minimum=0, maximum=60)
    # Authors' public profiles (username, display name) are cached this long.
    author_cache_seconds: int = setting("POSTS_AUTHOR_CACHE_SECONDS", 60, minimum=1)

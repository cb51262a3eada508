"""The messages service's settings: the shared ones and its own."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.ratelimit import Rate
from social_common.settings import Settings, setting


@dataclass(frozen=True, kw_only=True)
class MessagesSettings(Settings):
    # The seed's limit: 60 messages per minute per user.
    send_rate: Rate = setting("RATE_LIMIT_MESSAGES", Rate(60, 60))
    # Authors' public profiles (username, display name) are cached this long.
    author_cache_seconds: int = setting("MESSAGES_AUTHOR_CACHE_SECONDS", 60, minimum=1)

"""The messages service's own settings, read from the environment at start."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.ratelimit import Rate, env_rate
from social_common.settings import env_int


@dataclass(frozen=True)
class MessagesConfig:
    # The seed's limit: 60 messages per minute per user.
    send_rate: Rate = Rate(60, 60)
    # Authors' public profiles (username, display name) are cached this long.
    author_cache_seconds: int = 60

    @classmethod
    def from_env(cls) -> MessagesConfig:
        return cls(
            send_rate=env_rate("RATE_LIMIT_MESSAGES", cls.send_rate),
            author_cache_seconds=env_int(
                "MESSAGES_AUTHOR_CACHE_SECONDS", cls.author_cache_seconds, minimum=1
            ),
        )

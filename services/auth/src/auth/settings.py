"""The auth service's settings: the shared ones and its own."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.ratelimit import Rate
from social_common.settings import Settings, setting


@dataclass(frozen=True, kw_only=True)
class AuthSettings(Settings):
    access_ttl: int = setting("ACCESS_TOKEN_TTL_SECONDS", 15 * 60, minimum=60)
    refresh_ttl: int = setting("REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600, minimum=300)
    # How often each pod rereads the keys (to pick up rotations).
    keys_reload_seconds: int = setting("SIGNING_KEYS_RELOAD_SECONDS", 30, minimum=1)
    # OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane.
    argon2_memory_kib: int = setting("ARGON2_MEMORY_KIB", 19 * 1024, minimum=19 * 1024)
    argon2_time_cost: int = setting("ARGON2_TIME_COST", 2, minimum=2)
    argon2_parallelism: int = setting("ARGON2_PARALLELISM", 1, minimum=1)
    hash_workers: int = setting("PASSWORD_HASH_WORKERS", 2, minimum=1)
    login_per_account: Rate = setting("RATE_LIMIT_LOGIN_ACCOUNT", Rate(5, 60))
    login_per_ip: Rate = setting("RATE_LIMIT_LOGIN_IP", Rate(20, 60))
    register_per_ip: Rate = setting("RATE_LIMIT_REGISTER_IP", Rate(5, 30 * 60))
    # An export reads every row of the account in every service.
    export_per_account: Rate = setting("RATE_LIMIT_EXPORT_ACCOUNT", Rate(5, 60 * 60))
    # How long a deleted account's username stays unavailable to others.
    retired_username_days: int = setting("RETIRED_USERNAME_DAYS", 30, minimum=0)

"""The auth service's own settings, read from the environment at start."""

from __future__ import annotations

from dataclasses import dataclass

from social_common.ratelimit import Rate, env_rate
from social_common.settings import env_int


@dataclass(frozen=True)
class AuthConfig:
    access_ttl: int = 15 * 60
    refresh_ttl: int = 30 * 24 * 3600
    # How often each pod rereads the keys (to pick up rotations).
    keys_reload_seconds: int = 30
    # OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane.
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    hash_workers: int = 2
    login_per_account: Rate = Rate(5, 60)
    login_per_ip: Rate = Rate(20, 60)
    register_per_ip: Rate = Rate(5, 30 * 60)

    @classmethod
    def from_env(cls) -> AuthConfig:
        return cls(
            access_ttl=env_int("ACCESS_TOKEN_TTL_SECONDS", cls.access_ttl, minimum=60),
            refresh_ttl=env_int("REFRESH_TOKEN_TTL_SECONDS", cls.refresh_ttl, minimum=300),
            keys_reload_seconds=env_int(
                "SIGNING_KEYS_RELOAD_SECONDS", cls.keys_reload_seconds, minimum=1
            ),
            argon2_memory_kib=env_int(
                "ARGON2_MEMORY_KIB", cls.argon2_memory_kib, minimum=19 * 1024
            ),
            argon2_time_cost=env_int("ARGON2_TIME_COST", cls.argon2_time_cost, minimum=2),
            argon2_parallelism=env_int("ARGON2_PARALLELISM", cls.argon2_parallelism, minimum=1),
            hash_workers=env_int("PASSWORD_HASH_WORKERS", cls.hash_workers, minimum=1),
            login_per_account=env_rate("RATE_LIMIT_LOGIN_ACCOUNT", cls.login_per_account),
            login_per_ip=env_rate("RATE_LIMIT_LOGIN_IP", cls.login_per_ip),
            register_per_ip=env_rate("RATE_LIMIT_REGISTER_IP", cls.register_per_ip),
        )

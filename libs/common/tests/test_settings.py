"""Settings are validated at start; production refuses dev placeholders."""

from __future__ import annotations

import pytest
from social_common.settings import Settings, SettingsError


def test_dev_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("APP_ENV", "DATABASE_URL", "REDIS_URL", "HTTP_PORT", "GRPC_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env("posts")
    assert (settings.http_port, settings.grpc_port) == (8102, 9112)
    assert settings.database_url == "postgresql://posts:dev-posts@127.0.0.1:54329/social"
    assert settings.peers["auth"] == "127.0.0.1:9111"
    assert settings.bind_host == "127.0.0.1"


def test_production_requires_its_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    with pytest.raises(SettingsError, match="DATABASE_URL must be set"):
        Settings.from_env("auth")


def test_production_refuses_dev_placeholder_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://auth:dev-auth@db:5432/social")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    with pytest.raises(SettingsError, match="placeholder"):
        Settings.from_env("auth")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HTTP_PORT", "eighty", "must be an integer"),
        ("HTTP_PORT", "70000", "between"),
        ("APP_ENV", "staging", "APP_ENV must be one of"),
        ("SHUTDOWN_GRACE_SECONDS", "-1", "at least"),
    ],
)
def test_malformed_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env("auth")


def test_only_serving_requires_redis_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://posts:secret@db:5432/social")
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert Settings.from_env("posts", needs_redis=False).database_url is not None
    with pytest.raises(SettingsError, match="REDIS_URL must be set"):
        Settings.from_env("posts")

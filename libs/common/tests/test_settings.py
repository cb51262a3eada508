"""Settings are validated at start; production refuses dev placeholders."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from social_common.fleet import roster
from social_common.ratelimit import Rate
from social_common.settings import REQUIRED, Settings, SettingsError, setting


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


def test_a_service_without_a_database_has_no_database_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/social")
    assert Settings.from_env("realtime").database_url is None


@dataclass(frozen=True, kw_only=True)
class _Sample(Settings):
    rate: Rate = setting("SAMPLE_RATE", Rate(10, 60))
    size: int = setting("SAMPLE_SIZE", 800, minimum=40, maximum=1000)
    ratio: float = setting("SAMPLE_RATIO", 0.5, minimum=0, maximum=1)
    flag: bool = setting("SAMPLE_FLAG", False)
    name: str | None = setting("SAMPLE_NAME", None)
    bucket: str = setting("SAMPLE_BUCKET", "dev-bucket", production=REQUIRED)
    delay: float = setting("SAMPLE_DELAY", 0.0, production=5.0)


def test_a_subclass_reads_its_declared_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SAMPLE_RATE": "5/min",
        "SAMPLE_SIZE": "40",
        "SAMPLE_RATIO": "0.25",
        "SAMPLE_FLAG": "1",
        "SAMPLE_NAME": "x",
    }.items():
        monkeypatch.setenv(name, value)
    sample = _Sample.from_env("auth")
    assert isinstance(sample, _Sample)
    assert (sample.rate, sample.size, sample.ratio, sample.flag, sample.name) == (
        Rate(5, 60),
        40,
        0.25,
        True,
        "x",
    )
    assert (sample.bucket, sample.delay, sample.service) == ("dev-bucket", 0.0, "auth")


def test_defaults_are_the_declared_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in _Sample.variables():
        monkeypatch.delenv(var.name, raising=False)
    assert _Sample.from_env("auth") == _Sample(
        service="auth",
        http_port=8101,
        grpc_port=9111,
        database_url=Settings.from_env("auth").database_url,
        redis_url=Settings.from_env("auth").redis_url,
        # Its peers on the local stack's ports (the roster's).
        peers={
            name: f"127.0.0.1:{roster().services[name].ports.grpc}"
            for name in roster().services["auth"].peers
        },
    )


def test_production_has_its_own_defaults_and_requirements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://auth:secret@db:5432/social")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    monkeypatch.delenv("SAMPLE_BUCKET", raising=False)
    with pytest.raises(SettingsError, match="SAMPLE_BUCKET must be set in production"):
        _Sample.from_env("auth")
    monkeypatch.setenv("SAMPLE_BUCKET", "prod-bucket")
    sample = _Sample.from_env("auth")
    assert (sample.bucket, sample.delay, sample.bind_host) == ("prod-bucket", 5.0, "0.0.0.0")  # noqa: S104


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SAMPLE_RATE", "lots", "SAMPLE_RATE: invalid rate"),
        ("SAMPLE_SIZE", "39", "between 40 and 1000"),
        ("SAMPLE_SIZE", "4.5", "must be an integer"),
        ("SAMPLE_RATIO", "2", "between 0 and 1"),
        ("SAMPLE_RATIO", "half", "must be a number"),
        ("SAMPLE_FLAG", "yes", "must be 0 or 1"),
    ],
)
def test_declared_fields_are_validated(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        _Sample.from_env("auth")


def test_secrets_stay_out_of_the_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_ADMIN_URL", "postgresql://admin:hunter2@db/social")
    assert "hunter2" not in repr(Settings.from_env("auth"))

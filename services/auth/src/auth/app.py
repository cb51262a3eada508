"""Wiring of the auth service: accounts, tokens, profiles and the follow graph."""

from __future__ import annotations

from datetime import timedelta

from social.auth.v1 import auth_pb2, auth_pb2_grpc
from social_common.fleet import roster
from social_common.peers import channel
from social_common.ratelimit import RateLimiter
from social_common.runner import Resources, Servicer, ServiceSpec, Wiring
from social_common.tokens import TokenVerifier

from auth.api import AuthApi
from auth.export import Exporter, user_data
from auth.keys import KeyRing, rotate_keys
from auth.passwords import Passwords
from auth.rpc import AuthRpc
from auth.service import AuthService
from auth.settings import AuthSettings


def wire(resources: Resources[AuthSettings]) -> Wiring:
    assert resources.db is not None
    settings = resources.settings
    passwords = Passwords(
        settings.argon2_memory_kib,
        settings.argon2_time_cost,
        settings.argon2_parallelism,
        settings.hash_workers,
    )
    keys = KeyRing(resources.db, settings.keys_reload_seconds)
    service = AuthService(resources.db, settings, passwords, keys)
    # Auth verifies its own tokens from its own key ring, not over the network:
    # a reread costs nothing, so it follows each reload of the ring.
    verifier = TokenVerifier(
        keys.jwks,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        jwks_max_age=settings.keys_reload_seconds,
        unknown_kid_refresh_interval=1.0,
        revoked=resources.revoked,
    )
    keepers = [channel(settings.peers[name]) for name in roster().user_data_keepers]
    exporter = Exporter(service, user_data(resources.db), keepers)
    api = AuthApi(service, keys, exporter, verifier, RateLimiter(resources.redis), settings)

    async def close() -> None:
        passwords.close()
        for keeper in keepers:
            await keeper.close()

    return Wiring(
        routes=api.routes(),
        servicers=[
            Servicer(
                AuthRpc(service, keys),
                auth_pb2_grpc.add_AuthServiceServicer_to_server,
                auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
            )
        ],
        background=[keys.keep_loaded, service.purge_forever],
        close=close,
    )


def rotate(settings: AuthSettings) -> None:
    """``python -m auth rotate-keys``: publish a new signing key (see auth.keys)."""
    assert settings.database_url is not None
    kid, activates_at = rotate_keys(
        settings.database_url,
        # Every pod serves the new key within one reload, every JWKS reader
        # has it one cache window later; a second of slack on top.
        publish_ahead=timedelta(
            seconds=settings.keys_reload_seconds + settings.jwks_cache_seconds + 1
        ),
        longest_token_life=timedelta(seconds=settings.access_ttl),
    )
    print(f"published key {kid}; it signs from {activates_at.isoformat()}")


def spec() -> ServiceSpec[AuthSettings]:
    return ServiceSpec(
        name="auth", settings_class=AuthSettings, wire=wire, commands={"rotate-keys": rotate}
    )

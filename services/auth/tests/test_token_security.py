"""Forged and mistaken tokens are refused at the gateway and by the service
itself (a request that bypasses the gateway gains nothing): 401, never 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from social_stack.local import Endpoints
from social_stack.testing import client, create_account


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signing_key(stack: Endpoints) -> tuple[str, ECKey]:
    with psycopg.connect(stack.database_admin_url) as conn:
        row = conn.execute(
            "SELECT kid, private_jwk FROM auth.signing_keys WHERE activates_at <= now()"
            " ORDER BY activates_at DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return row[0], ECKey.import_key(row[1])


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "social-auth",
        "aud": "social-api",
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        "sid": str(uuid.uuid4()),
        "typ": "access",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(stack: Endpoints, header: dict[str, Any] | None = None, **changes: Any) -> str:
    kid, key = _signing_key(stack)
    return jwt.encode(
        {"alg": "ES256", "kid": kid, "typ": "at+jwt", **(header or {})},
        _claims(**changes),
        key,
        algorithms=["ES256"],
    )


def _alg_none(stack: Endpoints) -> str:
    kid, _ = _signing_key(stack)
    header = _b64(json.dumps({"alg": "none", "kid": kid, "typ": "at+jwt"}).encode())
    return f"{header}.{_b64(json.dumps(_claims()).encode())}."


def _hs256_with_public_key(stack: Endpoints) -> str:
    # The classic key confusion: HMAC keyed with the published public key.
    kid, key = _signing_key(stack)
    secret = json.dumps(key.as_dict(private=False)).encode()
    signing_input = (
        _b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "at+jwt"}).encode())
        + "."
        + _b64(json.dumps(_claims()).encode())
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _unknown_kid(stack: Endpoints) -> str:
    stranger = ECKey.generate_key("P-256")
    return jwt.encode(
        {"alg": "ES256", "kid": "no-such-kid", "typ": "at+jwt"},
        _claims(),
        stranger,
        algorithms=["ES256"],
    )


def _tampered(token: str) -> str:
    """The same signature over a payload claiming another subject."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = str(uuid.uuid4())
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


FORGERIES: dict[str, Callable[[Endpoints], str]] = {
    "alg none": _alg_none,
    "HS256 signed with the public key": _hs256_with_public_key,
    "unknown kid": _unknown_kid,
    "expired": lambda s: _signed(s, exp=int(time.time()) - 3600, iat=int(time.time()) - 4000),
    "wrong issuer": lambda s: _signed(s, iss="someone-else"),
    "wrong audience": lambda s: _signed(s, aud="another-api"),
    "not an access token": lambda s: _signed(s, typ="refresh"),
    "no subject": lambda s: _signed(s, sub=None),
    "tampered payload": lambda s: _tampered(_signed(s)),
    "tampered signature": lambda s: _signed(s)[:-10] + "AAAAAAAAAA",
    "garbage": lambda _s: "not.a.token",
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_tokens_are_refused_at_the_gateway(stack: Endpoints, forgery: str) -> None:
    token = FORGERIES[forgery](stack)
    with client(stack.gateway_url) as http:
        response = http.get("/api/v1/users/profile", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_tokens_are_refused_by_the_service_directly(stack: Endpoints, forgery: str) -> None:
    token = FORGERIES[forgery](stack)
    with client(f"http://{stack.services_http['auth']}") as http:
        response = http.get("/api/v1/users/profile", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "unauthorized"


def test_a_refresh_token_is_not_an_access_token(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    bearer = {"Authorization": f"Bearer {account.refresh_token}"}
    for base in (stack.gateway_url, f"http://{stack.services_http['auth']}"):
        with client(base) as http:
            assert http.get("/api/v1/users/profile", headers=bearer).status_code == 401


def test_a_well_signed_token_for_a_real_user_is_accepted_both_ways(stack: Endpoints) -> None:
    # The control: the forgeries fail for what is wrong with them, not by accident.
    account = create_account(stack.gateway_url)
    token = _signed(stack, sub=account.id)
    for base in (stack.gateway_url, f"http://{stack.services_http['auth']}"):
        with client(base) as http:
            me = http.get("/api/v1/users/profile", headers={"Authorization": f"Bearer {token}"})
        assert (me.status_code, me.json()["id"]) == (200, account.id)


def test_tokens_in_the_query_string_or_identity_headers_count_for_nothing(
    stack: Endpoints,
) -> None:
    account = create_account(stack.gateway_url)
    for base in (stack.gateway_url, f"http://{stack.services_http['auth']}"):
        with client(base) as http:
            in_query = http.get(
                "/api/v1/users/profile", params={"access_token": account.access_token}
            )
            claimed = http.get(
                "/api/v1/users/profile",
                headers={"X-User-Id": account.id, "X-Forwarded-User": account.username},
            )
        assert in_query.status_code == 401
        assert claimed.status_code == 401


def test_an_invalid_token_on_an_optional_route_is_refused_not_ignored(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        response = http.get(
            f"/api/v1/users/{account.username}", headers={"Authorization": "Bearer not.a.token"}
        )
    assert response.status_code == 401


def test_login_works_with_a_stale_authorization_header(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    stale = _signed(stack, sub=account.id, exp=int(time.time()) - 3600, iat=int(time.time()) - 4000)
    with client(stack.gateway_url) as http:
        response = http.post(
            "/api/v1/users/login",
            headers={"Authorization": f"Bearer {stale}"},
            json={"email": account.email, "password": account.password},
        )
    assert response.status_code == 200


def test_jwks_publishes_public_keys_only(stack: Endpoints) -> None:
    with client(stack.gateway_url) as http:
        response = http.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert "max-age=" in response.headers["cache-control"]
    keys = response.json()["keys"]
    assert keys
    for key in keys:
        assert {key["kty"], key["crv"], key["alg"], key["use"]} == {"EC", "P-256", "ES256", "sig"}
        assert key["kid"]
        assert "d" not in key


def _kid_of(token: str) -> str:
    header = token.split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"])


def test_rotate_keys_publishes_first_then_signs_and_old_tokens_stay_valid(
    stack: Endpoints,
) -> None:
    before = create_account(stack.gateway_url)
    old_kid = _kid_of(before.access_token)
    rotated_at = datetime.now(UTC)
    rotated = subprocess.run(
        [sys.executable, "-m", "auth", "rotate-keys"],
        env={
            **os.environ,
            "DATABASE_URL": stack.database_urls["auth"],
            "REDIS_URL": stack.redis_url,
            # The test stack's clocks: the gateway caches the JWKS for 1 s and
            # auth rereads its keys every second.
            "JWKS_CACHE_SECONDS": "1",
            "SIGNING_KEYS_RELOAD_SECONDS": "1",
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert "published key" in rotated.stdout
    # "published key <kid>; it signs from <time>"
    words = rotated.stdout.split()
    new_kid, activates_at = words[2].rstrip(";"), datetime.fromisoformat(words[-1])
    # Ahead by a key reload (1 s) plus the JWKS cache window (1 s) plus a second.
    assert activates_at - rotated_at >= timedelta(seconds=2.5)
    deadline = time.monotonic() + 15
    with client(stack.gateway_url) as http:
        while {old_kid, new_kid} - {
            k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]
        }:
            assert time.monotonic() < deadline, "the JWKS never listed both keys"
            time.sleep(0.1)
    assert datetime.now(UTC) < activates_at, "published only once it could already sign"
    # Every token issued before the activation still carries the old key...
    while True:
        after = create_account(stack.gateway_url)
        if datetime.now(UTC) >= activates_at:
            break
        assert _kid_of(after.access_token) == old_kid
    # ...and after it, the new one.
    while _kid_of((after := create_account(stack.gateway_url)).access_token) != new_kid:
        assert time.monotonic() < deadline, "new key never used for signing"
    with client(stack.gateway_url) as http:
        # The gateway knew the new key before it signed anything...
        assert http.get("/api/v1/users/profile", headers=after.auth).status_code == 200
        # ...and still knows the old one, whose tokens have not expired.
        assert http.get("/api/v1/users/profile", headers=before.auth).status_code == 200

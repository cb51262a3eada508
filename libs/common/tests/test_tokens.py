"""Access-token verification against real ES256 keys and signatures: no crypto is mocked."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.errors import UnsupportedAlgorithmError
from joserfc.jwk import ECKey, Key, OctKey, OKPKey, RSAKey
from social_common.errors import Problem
from social_common.tokens import (
    _JWS_REGISTRY,
    MAX_TOKEN_LENGTH,
    AccessClaims,
    InvalidToken,
    TokenVerifier,
    authenticate,
    authenticate_optional,
    bearer_token,
)
from starlette.requests import Request
from structlog.testing import capture_logs

NOW = 1_700_000_000
ISSUER = "https://auth.social.example"
AUDIENCE = "social"
USER = "6f1c2b8e-4d3a-4f5e-9a7b-0c1d2e3f4a5b"
SESSION = "0190b2c4-8a1e-7c3d-9f00-0123456789ab"


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


class Jwks:
    """The JWKS source: publishes the public half of `keys`, counts fetches, can fail."""

    def __init__(self, *keys: Key) -> None:
        self.keys = list(keys)
        self.fetches = 0
        self.fail = False
        self.delay = 0.0

    async def __call__(self) -> Mapping[str, Any]:
        self.fetches += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("auth is down")
        return {"keys": [k.as_dict(private=False, alg="ES256", use="sig") for k in self.keys]}


def es_key(kid: str) -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": kid})


def claims(**changes: Any) -> dict[str, Any]:
    """Good access-token claims; a change to None drops the claim."""
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": USER,
        "jti": secrets.token_hex(8),
        "sid": SESSION,
        "iat": NOW,
        "exp": NOW + 900,
        "typ": "access",
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: Key, body: dict[str, Any] | None = None, alg: str = "ES256", **header: Any) -> str:
    protected = {"alg": alg, "kid": key.kid, "typ": "at+jwt", **header}
    return jwt.encode(protected, body or claims(), key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode())


def hs256(secret: bytes, kid: str) -> str:
    """The key-confusion forgery: HMAC keyed with bytes anyone can read."""
    signing_input = f"{segment({'alg': 'HS256', 'kid': kid, 'typ': 'at+jwt'})}.{segment(claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def verifier(jwks: Jwks, clock: Clock | None = None, **options: Any) -> TokenVerifier:
    return TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE, clock=clock or Clock(), **options)


def verify(v: TokenVerifier, token: Any) -> AccessClaims:
    return asyncio.run(v.verify(token))


def refused(v: TokenVerifier, token: Any) -> str:
    with pytest.raises(InvalidToken) as info:
        asyncio.run(v.verify(token))
    return str(info.value)


def test_a_good_token_verifies() -> None:
    key = es_key("k1")
    body = claims()
    result = verify(verifier(Jwks(key)), sign(key, body))
    assert result == AccessClaims(USER, body["jti"], SESSION, NOW, NOW + 900, body)
    assert verify(verifier(Jwks(key)), sign(key, claims(aud=["other", AUDIENCE]))).subject == USER


def test_a_token_of_a_revoked_session_is_refused_even_when_cached() -> None:
    key = es_key("k1")
    revoked: set[str] = set()
    v = verifier(Jwks(key), revoked=revoked)
    token = sign(key)
    assert verify(v, token).session_id == SESSION
    revoked.add(SESSION)
    assert "revoked" in refused(v, token)
    assert verify(v, sign(key, claims(sid="another-session"))).subject == USER


def test_a_token_without_a_session_is_refused() -> None:
    key = es_key("k1")
    for sid in (None, 7):
        refused(verifier(Jwks(key)), sign(key, claims(sid=sid)))


def test_alg_none_is_refused() -> None:
    key = es_key("k1")
    token = f"{segment({'alg': 'none', 'kid': 'k1', 'typ': 'at+jwt'})}.{segment(claims())}."
    assert "alg" in refused(verifier(Jwks(key)), token)


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    key = es_key("k1")
    v = verifier(Jwks(key))
    public_json = json.dumps(key.as_dict(private=False, alg="ES256", use="sig")).encode()
    for secret in (public_json, key.as_pem(private=False)):
        assert "alg" in refused(v, hs256(secret, "k1"))


def test_joserfc_itself_is_pinned_to_es256() -> None:
    # The second lock: with the header check bypassed, joserfc still refuses HS256.
    secret = OctKey.import_key(secrets.token_bytes(32), parameters={"kid": "k1"})
    with pytest.raises(UnsupportedAlgorithmError):
        jwt.decode(sign(secret, alg="HS256"), secret, registry=_JWS_REGISTRY)


def test_other_algorithms_are_refused() -> None:
    key = es_key("k1")
    v = verifier(Jwks(key))
    others: list[tuple[Key, str]] = [
        (RSAKey.generate_key(2048, parameters={"kid": "k1"}), "RS256"),
        (RSAKey.generate_key(2048, parameters={"kid": "k1"}), "PS256"),
        (ECKey.generate_key("P-384", parameters={"kid": "k1"}), "ES384"),
        (OKPKey.generate_key("Ed25519", parameters={"kid": "k1"}), "Ed25519"),
    ]
    for other, alg in others:
        assert "alg" in refused(v, sign(other, alg=alg))
    eddsa = f"{segment({'alg': 'EdDSA', 'kid': 'k1', 'typ': 'at+jwt'})}.{segment(claims())}.AAAA"
    assert "alg" in refused(v, eddsa)


def test_a_signature_by_another_key_with_a_known_kid_is_refused() -> None:
    key, impostor = es_key("k1"), es_key("k1")
    assert "BadSignature" in refused(verifier(Jwks(key)), sign(impostor))


def test_an_unknown_kid_refetches_at_most_once_per_interval() -> None:
    key, stranger = es_key("k1"), es_key("k2")
    jwks, clock = Jwks(key), Clock()
    v = verifier(jwks, clock)
    assert "unknown kid" in refused(v, sign(stranger))
    assert jwks.fetches == 2  # the first load, then one refetch for the new kid
    assert "unknown kid" in refused(v, sign(es_key("k3")))
    assert jwks.fetches == 2  # a flood of random kids costs auth nothing more
    clock.now += 30
    refused(v, sign(es_key("k4")))
    assert jwks.fetches == 3


def test_a_rotated_in_key_is_accepted_after_a_refetch() -> None:
    old, new = es_key("2024"), es_key("2025")
    jwks = Jwks(old)
    v = verifier(jwks)
    verify(v, sign(old))
    jwks.keys.append(new)
    assert verify(v, sign(new)).subject == USER
    assert jwks.fetches == 2


def test_expiry_follows_the_clock_with_leeway() -> None:
    key = es_key("k1")
    token = sign(key, claims(exp=NOW + 60))
    clock = Clock()
    clock.now = NOW + 60 + 29  # within the 30 s leeway
    verify(verifier(Jwks(key), clock, cache_size=0), token)
    clock.now = NOW + 60 + 30
    assert "exp" in refused(verifier(Jwks(key), clock), token)


def test_iat_in_the_future_is_refused() -> None:
    key = es_key("k1")
    verify(verifier(Jwks(key)), sign(key, claims(iat=NOW + 30)))  # clock skew within leeway
    assert "iat" in refused(verifier(Jwks(key)), sign(key, claims(iat=NOW + 31)))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"iss": "https://evil.example"}, "iss"),
        ({"aud": "posts-admin"}, "aud"),
        ({"aud": ["posts-admin", "other"]}, "aud"),
        ({"sub": None}, "sub"),
        ({"sub": ""}, "sub"),
        ({"sub": 42}, "sub"),
        ({"jti": None}, "jti"),
        ({"exp": None}, "exp"),
        ({"iat": None}, "iat"),
        ({"iat": "yesterday"}, "iat"),
        ({"typ": None}, "typ"),
        ({"typ": "refresh"}, "typ"),
        ({"typ": ["access"]}, "typ"),
        ({"nbf": NOW + 3600}, "nbf"),
    ],
)
def test_bad_claims_are_refused(changes: dict[str, Any], reason: str) -> None:
    key = es_key("k1")
    assert reason in refused(verifier(Jwks(key)), sign(key, claims(**changes)))


def test_header_typ_and_kid_are_required() -> None:
    key = es_key("k1")
    v = verifier(Jwks(key))
    assert "typ" in refused(v, sign(key, typ="JWT"))
    no_kid = jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims(), key, algorithms=["ES256"])
    assert "kid" in refused(v, no_kid)


def test_an_opaque_refresh_token_is_refused() -> None:
    assert "segments" in refused(verifier(Jwks(es_key("k1"))), secrets.token_urlsafe(32))


def test_garbage_of_any_shape_is_only_ever_invalid_token() -> None:
    key = es_key("k1")
    good = sign(key)
    head, body, sig = good.split(".")
    ok_header = {"alg": "ES256", "kid": "k1", "typ": "at+jwt"}
    garbage: list[Any] = [
        None,
        b"bytes",
        42,
        ["a.b.c"],
        {},
        "",
        " ",
        ".",
        "..",
        "...",
        "a.b",
        "a.b.c",
        "a.b.c.d",
        "é.é.é",
        "\x00.\x00.\x00",
        "eyJ.eyJ.eyJ",
        f"{head}.{body}",
        f"{good}.",
        f" {good}",
        f"{head}.{body}.",
        f"{head}.{body}.{sig[:-4]}",
        f"{head}.{body}.{sig}AAAA",
        f"{head}.{body}.{'A' * 2000}",
        f"{head}.{body}.!!!!",
        f"{head}.!!!!.{sig}",
        f"{head}.{segment(claims(sub='someone-else'))}.{sig}",  # swapped payload
        f"{segment('alg')}.{body}.{sig}",
        f"{segment(['alg'])}.{body}.{sig}",
        f"{segment(None)}.{body}.{sig}",
        f"{b64(b'{not json')}.{body}.{sig}",
        f"{b64(b'[' * 300)}.{body}.{sig}",
        f"{b64(bytes(range(256)))}.{body}.{sig}",
        f"{segment({'alg': 'es256', 'kid': 'k1', 'typ': 'at+jwt'})}.{body}.{sig}",
        f"{segment({'alg': ['ES256'], 'kid': 'k1', 'typ': 'at+jwt'})}.{body}.{sig}",
        f"{segment({'alg': 'ES256', 'kid': 7, 'typ': 'at+jwt'})}.{body}.{sig}",
        f"{segment({'alg': 'ES256', 'kid': 'k1', 'typ': 'at+jwt', 'pad': 'x' * 600})}.{body}.{sig}",
        # validly signed, but the payload is not a claims object
        jws.serialize_compact(ok_header, b"not json", key),
        jws.serialize_compact(ok_header, b"[1, 2]", key),
        sign(key, b64=False, crit=["b64"]),
        jwt.encode({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}, {}, key, algorithms=["ES256"]),
    ]
    v = verifier(Jwks(key))
    for token in garbage:
        refused(v, token)
    verify(v, good)  # and the verifier still works


def test_a_token_over_the_length_limit_is_refused_before_parsing() -> None:
    key = es_key("k1")
    jwks = Jwks(key)
    token = sign(key, claims(pad="x" * MAX_TOKEN_LENGTH))
    assert "longer" in refused(verifier(jwks), token)
    assert jwks.fetches == 0


def test_a_cached_token_costs_no_crypto_and_lives_until_exp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = es_key("old"), es_key("new")
    jwks, clock = Jwks(old), Clock()
    v = verifier(jwks, clock)
    token = sign(old)
    decodes = 0
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> jwt.Token:
        nonlocal decodes
        decodes += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    first = verify(v, token)
    assert verify(v, token) is first
    assert decodes == 1
    # The old key leaves the JWKS and a refresh (past max age) takes it away...
    jwks.keys = [new]
    clock.now += 301
    verify(v, sign(new))
    assert jwks.fetches == 2
    refused(verifier(jwks, clock), token)  # a fresh verifier no longer accepts it
    # ...yet the cached token holds until its exp, and never after.
    assert verify(v, token) is first
    clock.now = NOW + 900
    assert "unknown kid" in refused(v, token)


def test_the_cache_is_a_bounded_lru() -> None:
    old, new = es_key("old"), es_key("new")
    jwks, clock = Jwks(old), Clock()
    v = verifier(jwks, clock, cache_size=3)
    first, second, third = sign(old), sign(old), sign(old)
    for token in (first, second, third):
        verify(v, token)
    verify(v, first)  # used again: now `second` is the least recently used
    jwks.keys = [new]
    clock.now += 301
    verify(v, sign(new))  # refreshes the keys, and pushes `second` out of the cache
    # The old key is gone, so only tokens still cached pass.
    verify(v, first)
    verify(v, third)
    refused(v, second)


def test_a_failed_jwks_refresh_keeps_the_last_good_set() -> None:
    key = es_key("k1")
    jwks, clock = Jwks(key), Clock()
    v = verifier(jwks, clock)
    verify(v, sign(key))
    jwks.fail = True
    clock.now += 301
    with capture_logs() as logs:
        verify(v, sign(key))
    assert jwks.fetches == 2
    assert [e["event"] for e in logs] == ["jwks_refresh_failed"]
    assert logs[0]["log_level"] == "warning"
    clock.now += 10
    verify(v, sign(key))
    assert jwks.fetches == 2  # retries are spaced, not one per request
    clock.now += 30
    verify(v, sign(key))
    assert jwks.fetches == 3


def test_without_any_good_jwks_tokens_are_refused() -> None:
    key = es_key("k1")
    jwks = Jwks(key)
    jwks.fail = True
    assert "unknown kid" in refused(verifier(jwks), sign(key))
    empty = Jwks()
    assert "unknown kid" in refused(verifier(empty), sign(key))


def test_concurrent_refreshes_are_single_flight() -> None:
    key = es_key("k1")
    jwks = Jwks(key)
    jwks.delay = 0.05
    v = verifier(jwks)

    async def many() -> list[AccessClaims]:
        return await asyncio.gather(*(v.verify(sign(key)) for _ in range(20)))

    assert len(asyncio.run(many())) == 20
    assert jwks.fetches == 1


def request(*headers: tuple[str, str], query: str = "") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        }
    )


def test_bearer_token_reads_only_the_authorization_header() -> None:
    assert bearer_token(request(("Authorization", "Bearer abc"))) == "abc"
    assert bearer_token(request(("Authorization", "bEaReR  abc "))) == "abc"
    assert bearer_token(request(query="access_token=abc")) is None
    assert bearer_token(request(("Cookie", "access_token=abc"))) is None
    assert bearer_token(request(("Authorization", "Basic YTpi"))) is None
    assert bearer_token(request(("Authorization", "Bearer "))) is None
    duplicated = request(("Authorization", "Bearer abc"), ("Authorization", "Bearer def"))
    assert bearer_token(duplicated) is None


def test_authenticate_answers_401_problems() -> None:
    key = es_key("k1")
    v = verifier(Jwks(key))
    token = sign(key)
    assert (
        asyncio.run(authenticate(request(("Authorization", f"Bearer {token}")), v)).subject == USER
    )

    cases = [
        (request(query=f"access_token={token}"), "Bearer"),
        (request(("Authorization", "Bearer nope")), 'Bearer error="invalid_token"'),
        (request(("Authorization", f"Basic {token}")), 'Bearer error="invalid_token"'),
    ]
    for req, challenge in cases:
        with pytest.raises(Problem) as info:
            asyncio.run(authenticate(req, v))
        assert (info.value.status, info.value.code) == (401, "unauthorized")
        assert info.value.headers == {"WWW-Authenticate": challenge}
        assert "segments" not in (info.value.detail or "")  # the reason stays in the log


def test_authenticate_optional_is_anonymous_only_without_a_header() -> None:
    key = es_key("k1")
    v = verifier(Jwks(key))
    assert asyncio.run(authenticate_optional(request(query="access_token=x"), v)) is None
    good = request(("Authorization", f"Bearer {sign(key)}"))
    assert asyncio.run(authenticate_optional(good, v)) is not None
    with pytest.raises(Problem) as info:
        asyncio.run(authenticate_optional(request(("Authorization", "Bearer nope")), v))
    assert info.value.status == 401

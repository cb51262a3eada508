"""Verification of the access tokens the auth service issues.

Every service checks bearer tokens itself, so a request that bypasses the
gateway gains nothing. Access tokens are ES256 JWTs (RFC 9068 profile: header
``typ`` "at+jwt", claim ``typ`` "access"); the public keys come from a JWKS
that :class:`TokenVerifier` fetches through a caller-supplied coroutine,
caches, and refreshes. Refresh tokens are opaque strings and never verify here.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Container, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from joserfc import jwt
from joserfc.errors import ClaimError
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry
from joserfc.util import urlsafe_b64decode
from starlette.requests import HTTPConnection, Request

from social_common.errors import Problem
from social_common.ids import parse_uuid
from social_common.logging import get_logger

# S105: names with "TOKEN" in them, not secrets
ACCESS_TOKEN_ALGORITHM = "ES256"  # noqa: S105
ACCESS_TOKEN_TYPE = "access"  # noqa: S105
MAX_TOKEN_LENGTH = 4096
_MAX_HEADER_SEGMENT = 512  # an ES256 header with a kid is ~100 characters
_HEADER_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_JWKS_FETCH_TIMEOUT = 10.0

# The second lock on the algorithm (the first is the header check in verify):
# even if that check were bypassed, joserfc refuses every algorithm but ES256.
_JWS_REGISTRY = JWSRegistry(algorithms=[ACCESS_TOKEN_ALGORITHM])

log = get_logger(__name__)


@dataclass(frozen=True)
class AccessClaims:
    subject: str  # sub: the user id
    token_id: str  # jti
    session_id: str  # sid: the login (token family) it belongs to
    issued_at: int
    expires_at: int
    raw: Mapping[str, Any]

    @property
    def user_id(self) -> uuid.UUID:
        """The subject as the user's id (verify() refuses a sub that is no UUID)."""
        return uuid.UUID(self.subject)


class InvalidToken(Exception):
    """The token is not a valid access token; the message is for logs only."""


JwksSource = Callable[[], Awaitable[Mapping[str, Any]]]


class TokenVerifier:
    def __init__(
        self,
        jwks_source: JwksSource,
        *,
        issuer: str,
        audience: str,
        leeway: int = 30,
        cache_size: int = 10_000,
        jwks_max_age: float = 300.0,
        unknown_kid_refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
        revoked: Container[str] = frozenset(),
    ) -> None:
        self._source = jwks_source
        # Sessions whose tokens are refused before they expire (see social_common.revocation).
        self._revoked = revoked
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._cache_size = cache_size
        self._jwks_max_age = jwks_max_age
        self._unknown_kid_interval = unknown_kid_refresh_interval
        self._clock = clock
        self._keys: dict[str, ECKey] = {}
        self._next_refresh_at = -math.inf
        self._last_unknown_kid_refresh = -math.inf
        self._refreshing: asyncio.Task[None] | None = None
        self._cache: OrderedDict[str, AccessClaims] = OrderedDict()

    async def verify(self, token: str) -> AccessClaims:
        if not isinstance(token, str):
            raise InvalidToken("token is not a string")
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken(f"token longer than {MAX_TOKEN_LENGTH} characters")
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None:
            if now < cached.expires_at:
                self._cache.move_to_end(token)
                return self._unrevoked(cached)
            del self._cache[token]

        kid = _checked_header_kid(token)
        key = await self._key_for(kid)
        try:
            # The registry, not an `algorithms` argument, pins ES256: jwt.decode
            # ignores `algorithms` whenever a registry is passed.
            claims = jwt.decode(token, key, registry=_JWS_REGISTRY).claims
            self._claims_registry(now).validate(claims)
        except ClaimError as exc:  # its message alone may not name the claim
            raise InvalidToken(f"claim {exc.claim!r}: {exc}") from exc
        # Hostile input can surface as JoseError, ValueError, TypeError, RecursionError...
        # from joserfc, json or cryptography: whatever it is, the token is refused.
        except Exception as exc:
            raise InvalidToken(f"{type(exc).__name__}: {exc}") from exc
        # joserfc's "value" option also accepts a list containing the value, so
        # typ is compared here, exactly.
        if claims.get("typ") != ACCESS_TOKEN_TYPE:
            raise InvalidToken(f"typ claim is {claims.get('typ')!r}, not {ACCESS_TOKEN_TYPE!r}")
        if not isinstance(claims.get("sub"), str) or parse_uuid(claims["sub"]) is None:
            raise InvalidToken("sub claim is not a user id")
        if not isinstance(claims.get("sid"), str):
            raise InvalidToken("sid claim is not a session id")

        result = AccessClaims(
            subject=claims["sub"],
            token_id=claims["jti"],
            session_id=claims["sid"],
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            raw=MappingProxyType(claims),
        )
        if self._cache_size > 0 and now < result.expires_at:
            self._cache[token] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._unrevoked(result)

    def _unrevoked(self, claims: AccessClaims) -> AccessClaims:
        if claims.session_id in self._revoked:
            raise InvalidToken("its session was revoked")
        return claims

    def _claims_registry(self, now: float) -> jwt.JWTClaimsRegistry:
        # Essential claims must be present; joserfc also rejects blank strings,
        # non-string iss/sub/jti, non-numeric exp/iat/nbf, and checks exp, iat,
        # nbf against now with the leeway.
        return jwt.JWTClaimsRegistry(
            now=int(now),
            leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "value": self._audience},
            exp={"essential": True},
            iat={"essential": True},
            sub={"essential": True},
            jti={"essential": True},
            sid={"essential": True},
            typ={"essential": True},
        )

    async def _key_for(self, kid: str) -> ECKey:
        now = self._clock()
        if now >= self._next_refresh_at:
            await self._refresh()
        key = self._keys.get(kid)
        # A new kid is what key rotation looks like, so it earns a fetch; but at
        # most one per interval, or a flood of random kids would hammer auth.
        if key is None and now - self._last_unknown_kid_refresh >= self._unknown_kid_interval:
            self._last_unknown_kid_refresh = now
            await self._refresh()
            key = self._keys.get(kid)
        if key is None:
            raise InvalidToken(f"unknown kid {kid!r}")
        return key

    async def _refresh(self) -> None:
        """Fetch the JWKS once for all concurrent callers."""
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._fetch())
        # shield: a cancelled request must not cancel the fetch others wait for
        await asyncio.shield(self._refreshing)

    async def _fetch(self) -> None:
        try:
            async with asyncio.timeout(_JWKS_FETCH_TIMEOUT):
                jwks = await self._source()
            keys = _parse_jwks(jwks)
        except Exception as exc:
            # Keep the last good keys: an auth hiccup must not fail every request.
            # Retry sooner than a full max age, but no more often than the
            # unknown-kid budget allows.
            self._next_refresh_at = self._clock() + min(
                self._jwks_max_age, self._unknown_kid_interval
            )
            log.warning("jwks_refresh_failed", error=repr(exc), kept_keys=sorted(self._keys))
        else:
            self._keys = keys
            self._next_refresh_at = self._clock() + self._jwks_max_age
        finally:
            self._refreshing = None


def _parse_jwks(jwks: Mapping[str, Any]) -> dict[str, ECKey]:
    """The usable ES256 public keys of a JWKS, by kid; other keys are skipped."""
    entries = jwks.get("keys") if isinstance(jwks, Mapping) else None
    if not isinstance(entries, list):
        raise TypeError("JWKS has no 'keys' list")
    keys: dict[str, ECKey] = {}
    for jwk in entries:
        if not (
            isinstance(jwk, Mapping)
            and jwk.get("kty") == "EC"
            and jwk.get("crv") == "P-256"
            and isinstance(jwk.get("kid"), str)
            and jwk["kid"]
            and jwk.get("use", "sig") == "sig"
            and jwk.get("alg", ACCESS_TOKEN_ALGORITHM) == ACCESS_TOKEN_ALGORITHM
        ):
            continue
        # Public members only: a JWKS that leaked "d" still yields a verify-only key.
        public = {name: jwk[name] for name in ("kty", "crv", "x", "y", "kid") if name in jwk}
        try:
            keys[jwk["kid"]] = ECKey.import_key(public)
        except Exception as exc:  # a bad point or encoding spoils one key, not the set
            log.warning("jwks_key_skipped", kid=jwk["kid"], error=repr(exc))
    if not keys:
        # Treated as a failed fetch, so the last good set stays in use.
        raise ValueError("JWKS holds no usable ES256 key")
    return keys


def _checked_header_kid(token: str) -> str:
    """Parse and check the JOSE header before any key or crypto is involved."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("not a compact JWS (three segments)")
    segment = parts[0]
    if len(segment) > _MAX_HEADER_SEGMENT:
        raise InvalidToken("header too large")
    try:
        header = json.loads(urlsafe_b64decode(segment.encode("ascii")))
    except (ValueError, RecursionError) as exc:  # binascii, unicode and JSON errors
        raise InvalidToken(f"undecodable header: {exc!r}") from exc
    if not isinstance(header, dict):
        raise InvalidToken("header is not a JSON object")
    alg = header.get("alg")
    if alg != ACCESS_TOKEN_ALGORITHM:
        raise InvalidToken(f"alg {alg!r} is not {ACCESS_TOKEN_ALGORITHM}")
    if header.get("typ") not in _HEADER_TYPES:
        raise InvalidToken(f"header typ {header.get('typ')!r} is not at+jwt")
    # Our issuer never sets these; "b64": false (RFC 7797, on by default in
    # joserfc) would change what the signature covers.
    if "crit" in header or "b64" in header:
        raise InvalidToken("unexpected crit/b64 header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("kid missing")
    return kid


def bearer_token(request: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header, and only there.

    Never a query parameter or cookie: those leak into logs, caches and
    referrers, and a cookie would invite CSRF.
    """
    values = request.headers.getlist("authorization")
    if len(values) != 1:  # none, or ambiguous duplicates
        return None
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def authenticate(request: Request, verifier: TokenVerifier) -> AccessClaims:
    """The caller's claims, or a 401 problem (RFC 6750 challenge in WWW-Authenticate)."""
    if "authorization" not in request.headers:
        raise Problem(
            401,
            "unauthorized",
            "A bearer access token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    token = bearer_token(request)
    if token is None:
        raise _invalid("authorization header is not a single bearer token")
    try:
        return await verifier.verify(token)
    except InvalidToken as exc:
        raise _invalid(str(exc)) from None


async def authenticate_optional(request: Request, verifier: TokenVerifier) -> AccessClaims | None:
    """None for an anonymous request; a present but invalid token is still a 401."""
    if "authorization" not in request.headers:
        return None
    return await authenticate(request, verifier)


def _invalid(reason: str) -> Problem:
    # The reason goes to the log only: it would tell an attacker which check failed.
    log.info("access_token_refused", reason=reason)
    return Problem(
        401,
        "unauthorized",
        "The access token is invalid or expired.",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )

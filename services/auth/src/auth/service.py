"""The auth service's rules: accounts, sessions (tokens) and the follow graph."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from email_validator import EmailNotValidError, validate_email
from psycopg_pool import AsyncConnectionPool
from social.auth.v1.events_pb2 import (
    SessionsRevoked,
    UserDeleted,
    UserFollowed,
    UserUnfollowed,
)
from social_common.errors import Problem
from social_common.events import emit
from social_common.ids import parse_uuid, uuid7
from social_common.logging import get_logger
from social_common.pagination import decode_cursor, encode_cursor
from social_common.tasks import every
from social_common.validation import clean_text, field_error

from auth import store
from auth.keys import KeyRing
from auth.passwords import Passwords, password_problem
from auth.settings import AuthSettings

log = get_logger(__name__)

# The producer of this service's events: its name, the one its outbox relay wakes for.
PRODUCER = "auth"

USERNAME = re.compile(r"[a-z0-9_]{3,30}")
# Words the API uses under /api/v1/users/: no account may take them as its name.
RESERVED_USERNAMES = frozenset(
    {"register", "login", "logout", "token", "password", "profile", "me", "admin", "api"}
)
MAX_DISPLAY_NAME = 50
MAX_BIO = 500
MAX_EMAIL = 254


def normalize_username(raw: str) -> str:
    username = raw.strip().lower()
    if not USERNAME.fullmatch(username):
        raise field_error("username", "3 to 30 characters of a-z, 0-9 and _")
    if username in RESERVED_USERNAMES:
        raise field_error("username", "this name is reserved")
    return username


def normalize_email(raw: str) -> str:
    if len(raw) > MAX_EMAIL:
        raise field_error("email", f"at most {MAX_EMAIL} characters")
    try:
        return validate_email(raw, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise field_error("email", str(exc)) from None


def check_password(password: str, field: str = "password") -> None:
    problem = password_problem(password)
    if problem:
        raise field_error(field, problem, code="weak_password")


def encode_follow_cursor(entry: store.FollowEntry) -> str:
    return encode_cursor([entry.followed_at.isoformat(), str(entry.id)])


def decode_follow_cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    """The position after which a follow page starts; a 422 when tampered with."""
    cursor = decode_cursor(raw, (str, str))
    if cursor is None:
        return None
    other = parse_uuid(cursor[1])
    try:
        moment: datetime | None = datetime.fromisoformat(cursor[0])
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or other is None:
        raise Problem(422, "invalid_cursor", "The cursor is not one this API issued.")
    return moment, other


def hash_refresh_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """A session's tokens, as login and refresh issue them."""

    access_token: str
    access_expires_in: int
    refresh_token: str
    refresh_expires_in: int
    user_id: uuid.UUID


INVALID_LOGIN = Problem(401, "invalid_credentials", "The login or the password is wrong.")
INVALID_REFRESH = Problem(401, "invalid_refresh_token", "The refresh token is not valid.")
WRONG_PASSWORD = Problem(403, "wrong_password", "The current password is wrong.")


def _taken(field: str) -> Problem:
    return Problem(
        409,
        f"{field}_taken",
        f"This {field} is already registered.",
        errors=[{"field": field, "message": "already registered"}],
    )


class AuthService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        settings: AuthSettings,
        passwords: Passwords,
        keys: KeyRing,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.passwords = passwords
        self.keys = keys
        # Registrations hashing now, by "username:<name>" and "email:<address>".
        self._registering: dict[str, asyncio.Future[None]] = {}

    # -- accounts ------------------------------------------------------------

    async def register(self, username: str, email: str, password: str) -> store.User:
        """A new account, or a 409 when its name or address is taken.

        A name taken is refused before any hashing, so that a burst of
        sign-ups for one name costs one hash: the others wait for the one in
        flight here (per name and per address), then find the name taken. A
        burst spread over several processes costs one hash in each, and the
        unique indexes decide.
        """
        username = normalize_username(username)
        email = normalize_email(email)
        check_password(password)
        claims = (f"username:{username}", f"email:{email.lower()}")
        while in_flight := [self._registering[c] for c in claims if c in self._registering]:
            await asyncio.wait(in_flight)
        # Claimed with no await since the loop saw them free: nobody else holds them.
        done = asyncio.get_running_loop().create_future()
        for claim in claims:
            self._registering[claim] = done
        try:
            async with self.pool.connection() as conn:
                taken = await store.taken(conn, username, email)
            if taken is not None:
                raise _taken(taken)
            password_hash = await self.passwords.hash(password)
            async with self.pool.connection() as conn:
                return await store.insert_user(conn, uuid7(), username, email, password_hash)
        except psycopg.errors.UniqueViolation as exc:
            field = "email" if "email" in (exc.diag.constraint_name or "") else "username"
            raise _taken(field) from None
        finally:
            for claim in claims:
                del self._registering[claim]
            done.set_result(None)

    async def login(self, *, username: str | None, email: str | None, password: str) -> Tokens:
        # Refused before hashing: an over-long input must not buy CPU time.
        if len(password) > 128 or len(username or email or "") > MAX_EMAIL:
            raise INVALID_LOGIN
        async with self.pool.connection() as conn:
            found = await store.credentials(conn, username=username, email=email)
        # Unknown accounts are verified against a dummy hash: same answer, same cost.
        ok, rehashed = await self.passwords.verify(found.password_hash if found else None, password)
        if found is None or not ok:
            raise INVALID_LOGIN
        async with self.pool.connection() as conn, conn.transaction():
            # The hash may have changed while we verified (a password change):
            # then this password is no longer the account's, and no session starts.
            if await store.lock_password_hash(conn, found.id) != found.password_hash:
                raise INVALID_LOGIN
            if rehashed:
                await store.set_password_hash(conn, found.id, rehashed)
            family_id = uuid7()
            await store.new_family(conn, family_id, found.id)
            return await self._issue(conn, found.id, family_id)

    async def refresh(self, refresh_token: str) -> Tokens:
        token_hash = hash_refresh_token(refresh_token)
        async with self.pool.connection() as conn:
            async with conn.transaction():
                state = await store.lock_refresh_token(conn, token_hash)
                if state is None or state.expired or state.revoked:
                    raise INVALID_REFRESH
                if not state.spent:
                    await store.spend_refresh_token(conn, token_hash)
                    return await self._issue(conn, state.user_id, state.family_id)
            # A spent token presented again: it was copied. End the whole chain,
            # the thief's tokens and the owner's alike.
            async with conn.transaction():
                await self._revoke(conn, state.user_id, "refresh token reused", state.family_id)
        raise INVALID_REFRESH

    async def logout(self, refresh_token: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            state = await store.lock_refresh_token(conn, hash_refresh_token(refresh_token))
            if state is not None:
                await self._revoke(conn, state.user_id, "logout", state.family_id)

    async def _revoke(
        self,
        conn: store.Conn,
        user_id: uuid.UUID,
        reason: str,
        family_id: uuid.UUID | None = None,
    ) -> None:
        """Ends one session of the user's (``family_id``) or all of them: their
        refresh tokens here, their access tokens in every service, which
        learn of it from the event (social_common.revocation)."""
        ended = await store.revoke_families(conn, user_id, reason, family_id)
        if not ended:
            return
        event = SessionsRevoked(
            user_id=str(user_id), session_ids=[str(i) for i in ended], reason=reason
        )
        # Until the last access token of these sessions has expired (and the
        # clock skew verifiers allow).
        event.expires_at.FromSeconds(int(time.time()) + self.settings.access_ttl + 60)
        await emit(
            conn, producer="auth", event_type="sessions.revoked", key=str(user_id), payload=event
        )

    async def _check_password(self, user_id: uuid.UUID, password: str) -> None:
        """A 403 unless ``password`` is the user's (re-entered to confirm a change)."""
        if len(password) > 128:
            raise WRONG_PASSWORD
        async with self.pool.connection() as conn:
            stored = await store.password_hash(conn, user_id)
        if stored is None:
            raise Problem(404, "not_found", "No such user.")
        ok, _ = await self.passwords.verify(stored, password)
        if not ok:
            raise WRONG_PASSWORD

    async def delete_account(self, user_id: uuid.UUID, password: str) -> None:
        """Deletes the account, its sessions (their tokens and sockets end at
        once) and follows; ``user.deleted`` has every other service delete
        what it holds of the user."""
        await self._check_password(user_id, password)
        retire_for = timedelta(days=self.settings.retired_username_days)
        async with self.pool.connection() as conn, conn.transaction():
            await self._revoke(conn, user_id, "account deleted")
            if not await store.delete_user(conn, user_id, retire_for):
                return  # deleted meanwhile, by another request
            await emit(
                conn,
                producer="auth",
                event_type="user.deleted",
                key=str(user_id),
                payload=UserDeleted(user_id=str(user_id)),
            )

    async def change_password(self, user_id: uuid.UUID, current: str, new: str) -> None:
        await self._check_password(user_id, current)
        check_password(new, field="new_password")
        new_hash = await self.passwords.hash(new)
        async with self.pool.connection() as conn, conn.transaction():
            await store.set_password_hash(conn, user_id, new_hash)
            await self._revoke(conn, user_id, "password changed")

    async def _issue(self, conn: store.Conn, user_id: uuid.UUID, family_id: uuid.UUID) -> Tokens:
        refresh_token = secrets.token_urlsafe(32)
        await store.insert_refresh_token(
            conn, hash_refresh_token(refresh_token), family_id, self.settings.refresh_ttl
        )
        now = int(time.time())
        access_token = await self.keys.sign(
            {
                "iss": self.settings.jwt_issuer,
                "aud": self.settings.jwt_audience,
                "sub": str(user_id),
                "iat": now,
                "exp": now + self.settings.access_ttl,
                "jti": uuid7().hex,
                "sid": str(family_id),
                "typ": "access",
            }
        )
        return Tokens(
            access_token,
            self.settings.access_ttl,
            refresh_token,
            self.settings.refresh_ttl,
            user_id,
        )

    # -- profiles --------------------------------------------------------------

    async def me(self, user_id: uuid.UUID) -> store.User:
        async with self.pool.connection() as conn:
            user = await store.user_by_id(conn, user_id)
        if user is None:
            raise Problem(404, "not_found", "No such user.")
        return user

    async def update_profile(self, user_id: uuid.UUID, changes: dict[str, str]) -> store.User:
        cleaned = {
            name: clean_text(name, value, MAX_DISPLAY_NAME if name == "display_name" else MAX_BIO)
            for name, value in changes.items()
        }
        if not cleaned:
            return await self.me(user_id)
        async with self.pool.connection() as conn:
            user = await store.update_profile(conn, user_id, cleaned)
        if user is None:
            raise Problem(404, "not_found", "No such user.")
        return user

    async def by_username(self, username: str) -> store.User:
        user = None
        if USERNAME.fullmatch(username.lower()):
            async with self.pool.connection() as conn:
                user = await store.user_by_username(conn, username)
        if user is None:
            raise Problem(404, "user_not_found", f"No user is called {username!r}.")
        return user

    async def is_following(self, follower: uuid.UUID, followee: uuid.UUID) -> bool:
        async with self.pool.connection() as conn:
            return await store.is_following(conn, follower, followee)

    # -- follows ---------------------------------------------------------------

    async def follow(self, follower: uuid.UUID, username: str, *, on: bool) -> store.User:
        followee = await self.by_username(username)
        if followee.id == follower:
            raise Problem(422, "cannot_follow_self", "You cannot follow yourself.")
        async with self.pool.connection() as conn, conn.transaction():
            if on:
                changed = await store.follow(conn, follower, followee.id)
            else:
                changed = await store.unfollow(conn, follower, followee.id)
            if changed:
                # In the follow's transaction: the event exists exactly when the change does.
                event = UserFollowed if on else UserUnfollowed
                await emit(
                    conn,
                    producer=PRODUCER,
                    event_type="user.followed" if on else "user.unfollowed",
                    key=str(follower),
                    payload=event(follower_id=str(follower), followee_id=str(followee.id)),
                )
        return followee

    async def follow_page(
        self, direction: str, user_id: uuid.UUID, cursor: str | None, limit: int
    ) -> tuple[list[store.FollowEntry], str | None]:
        """A page of followers or followings and the cursor of the next page."""
        after = decode_follow_cursor(cursor)
        async with self.pool.connection() as conn:
            # One more than asked tells whether a next page exists.
            entries = await store.follow_page(conn, direction, user_id, after, limit + 1)
        page = entries[:limit]
        return page, encode_follow_cursor(page[-1]) if len(entries) > limit else None

    async def purge_expired_sessions(self) -> int:
        """Deletes refresh tokens a day past their expiry and the families
        left without any; returns how many tokens went."""
        async with self.pool.connection() as conn, conn.transaction():
            return await store.purge_expired_refresh_tokens(conn)

    async def purge_forever(self, interval: float = 3600.0) -> None:
        async def purge() -> None:
            purged = await self.purge_expired_sessions()
            if purged:
                log.info("refresh_tokens_purged", count=purged)
            async with self.pool.connection() as conn:
                released = await store.purge_retired_usernames(conn)
            if released:
                log.info("retired_usernames_released", count=released)

        await every(interval, purge, what="refresh_token_purge", failures=(psycopg.Error,))

    async def users(self, ids: Sequence[uuid.UUID], usernames: Sequence[str]) -> list[store.User]:
        """The users named by id or by username (in any case); unknown ones are left out."""
        if not ids and not usernames:
            return []
        async with self.pool.connection() as conn:
            return await store.users_by_ids_or_usernames(
                conn, ids, [name.lower() for name in usernames]
            )

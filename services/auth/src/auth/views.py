"""What clients of auth send and see: its public bodies, in one place.

The rules (a username's alphabet, a password's strength) are checked by
auth.service with messages of their own; the limits are documented here
from the same constants.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from msgspec import UNSET, Meta, UnsetType
from social_common.models import Body, Moment, View, text_pattern

from auth import store
from auth.passwords import MAX_LENGTH as MAX_PASSWORD
from auth.passwords import MIN_LENGTH as MIN_PASSWORD
from auth.service import MAX_BIO, MAX_DISPLAY_NAME, MAX_EMAIL, Tokens

Password = Annotated[
    str,
    Meta(
        description="Refused when among the most common passwords.",
        extra_json_schema={"minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD},
    ),
]


class Registration(Body):
    username: Annotated[
        str,
        Meta(
            description="Stored in lower case; unique case-insensitively.",
            extra_json_schema={"pattern": "^[A-Za-z0-9_]{3,30}$"},
        ),
    ]
    email: Annotated[
        str,
        Meta(
            description="A deliverable address: special-use domains (RFC 6761: .test,"
            " .invalid, .localhost…) are refused.",
            extra_json_schema={"format": "email", "maxLength": MAX_EMAIL},
        ),
    ]
    password: Password


class Login(Body):
    """Exactly one of email and username."""

    json_schema_extra: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["email"]}, {"required": ["username"]}]
    }

    password: str
    email: str | UnsetType = UNSET
    username: str | UnsetType = UNSET


class RefreshToken(Body):
    refresh_token: str


class PasswordChange(Body):
    current_password: str
    new_password: Password


class AccountDeletion(Body):
    """The account's password, re-entered to confirm."""

    password: str


class ProfileChange(Body):
    """Free text: trimmed, no control characters but line feeds."""

    display_name: (
        Annotated[
            str,
            Meta(extra_json_schema={"maxLength": MAX_DISPLAY_NAME, "pattern": text_pattern()}),
        ]
        | UnsetType
    ) = UNSET
    bio: (
        Annotated[str, Meta(extra_json_schema={"maxLength": MAX_BIO, "pattern": text_pattern()})]
        | UnsetType
    ) = UNSET


class _User(View):
    id: uuid.UUID
    username: str
    display_name: str
    bio: str
    follower_count: int
    following_count: int
    created_at: Moment


class PublicUser(_User):
    followed_by_me: Annotated[bool, Meta(description="Only when a token is sent.")] | (
        UnsetType
    ) = UNSET


class OwnUser(_User):
    email: Annotated[str, Meta(extra_json_schema={"format": "email"})]


class Session(View):
    token_type: Literal["Bearer"]
    access_token: Annotated[str, Meta(description="A JWT signed with ES256.")]
    expires_in: Annotated[int, Meta(description="Seconds the access token is valid.")]
    refresh_expires_in: int
    user_id: uuid.UUID
    refresh_token: (
        Annotated[
            str,
            Meta(
                description="Opaque; single use. Absent when the request asked for it as a"
                " cookie (`X-Refresh-Cookie: 1`)."
            ),
        ]
        | UnsetType
    ) = UNSET


class FollowEntry(View):
    id: uuid.UUID
    username: str
    display_name: str
    followed_at: Moment


class FollowPage(View):
    items: list[FollowEntry]
    next_cursor: str | None


class Jwk(View):
    """A public signing key (RFC 7517)."""

    kty: Literal["EC"]
    crv: Literal["P-256"]
    x: str
    y: str
    kid: str
    alg: Literal["ES256"]
    use: Literal["sig"]


class Jwks(View):
    keys: list[Jwk]


# The bodies the OpenAPI document describes (make openapi).
SCHEMAS = (
    Jwks,
    Registration,
    Login,
    RefreshToken,
    PasswordChange,
    AccountDeletion,
    ProfileChange,
    PublicUser,
    OwnUser,
    Session,
    FollowPage,
)


def public_user(user: store.User, followed_by_me: bool | UnsetType = UNSET) -> PublicUser:
    return PublicUser(*_profile(user), followed_by_me=followed_by_me)


def own_user(user: store.User) -> OwnUser:
    return OwnUser(*_profile(user), email=user.email)


def _profile(
    user: store.User,
) -> tuple[uuid.UUID, str, str, str, int, int, datetime]:
    """The fields of ``_User``, in their order: what anyone may see of an account."""
    return (
        user.id,
        user.username,
        user.display_name,
        user.bio,
        user.follower_count,
        user.following_count,
        user.created_at,
    )


def session(tokens: Tokens) -> Session:
    return Session(
        token_type="Bearer",  # noqa: S106 (the token type, no secret)
        access_token=tokens.access_token,
        expires_in=tokens.access_expires_in,
        refresh_token=tokens.refresh_token,
        refresh_expires_in=tokens.refresh_expires_in,
        user_id=tokens.user_id,
    )


def follow_page(entries: list[store.FollowEntry], next_cursor: str | None) -> FollowPage:
    return FollowPage(
        items=[follow_entry(e) for e in entries],
        next_cursor=next_cursor,
    )


def follow_entry(entry: store.FollowEntry) -> FollowEntry:
    return FollowEntry(entry.id, entry.username, entry.display_name, entry.followed_at)

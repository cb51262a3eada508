"""Every operation of gateway/openapi.yaml, fuzzed through the gateway.

schemathesis generates requests from the document, valid ones and invalid
ones, sends them to the running stack through Envoy and checks each answer
against the document: no 5xx, a documented status code, content type and
headers, a body of the documented schema, invalid data refused with a 4xx,
and authentication enforced where the document asks for it.

Generated ids would only ever meet 404s, so a case names real things half
the time: a post, a media, a message, a direct upload and a user made for
it through the API by :class:`World`, which acts as one account (the bearer
of every authenticated request) and starts over with a new one when the
account is spent (rate limited, signed out, its password changed). Each
request leaves from a loopback address of its own, so per-address limits
only show where the document says they can.

Bounded for ``make test`` (a few examples per operation, derandomized);
``make fuzz`` raises ``FUZZ_EXAMPLES`` and draws a new ``FUZZ_SEED``.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict
from schemathesis import CheckFunction
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    positive_data_acceptance,
)
from social_common.errors import Problem
from social_common.models import text_pattern
from social_common.validation import clean_text
from social_stack.gateway import openapi_document
from social_stack.local import Endpoints
from social_stack.testing import Account, client, create_account, fresh_address, png

T = TypeVar("T")

# Examples per operation in the generation phase (the coverage phase adds the
# document's boundary cases on top).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "6"))
# A seed explores anew; without one the run is derandomized (the same cases every time).
SEED = os.environ.get("FUZZ_SEED")

CONFIG = schemathesis.Config.from_dict(
    {
        **({"seed": int(SEED)} if SEED else {}),
        "generation": {
            "max-examples": EXAMPLES,
            "deterministic": SEED is None,
            # Every JSON body refuses NUL characters in its strings with a 422
            # naming the field (social_common.rest.decode_body; PostgreSQL text
            # cannot hold them), which no JSON Schema keyword can say of every
            # string at once.
            "allow-x00": False,
        },
        "continue-on-failure": os.environ.get("FUZZ_ALL_FAILURES") == "1",
    }
)
SCHEMA = (
    schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
    # A WebSocket, which schemathesis does not speak (tests/test_realtime covers it).
    .exclude(operation_id="realtimeSocket")
)


class _FromAddress(requests.adapters.HTTPAdapter):
    """Connects from one loopback address."""

    def __init__(self, address: str) -> None:
        self._address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._address, 0)
        super().init_poolmanager(*args, **kwargs)


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", _FromAddress(fresh_address()))
    return session


class _Spent(Exception):
    """The owner is rate limited."""


class World:
    """The real things a case may name, made through the API on first use and
    again once used up, all belonging to one account (``owner``)."""

    def __init__(self, gateway_url: str) -> None:
        self.url = gateway_url
        self._owner: Account | None = None
        self._other: Account | None = None
        self._made: dict[str, Any] = {}

    @property
    def owner(self) -> Account:
        if self._owner is None:
            self._owner = create_account(self.url)
        return self._owner

    @property
    def other(self) -> Account:
        """Another account, to follow and to look at."""
        if self._other is None:
            self._other = create_account(self.url)
        return self._other

    def start_over(self) -> None:
        """A new owner: the last one is rate limited, signed out or changed its password."""
        self._owner = None
        self._made.clear()

    def forget(self, kind: str) -> None:
        self._made.pop(kind, None)

    def _once(self, kind: str, make: Callable[[], Any]) -> Any:
        if kind not in self._made:
            self._made[kind] = make()
        return self._made[kind]

    def _post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        with client(self.url) as http:
            response = http.post(path, headers=self.owner.auth, **kwargs)
        if response.status_code == 429:
            raise _Spent(path)
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()
        return made

    def real(self, make: Callable[[], T]) -> T:
        """What ``make`` makes, with a new owner if the last one's budget is spent."""
        try:
            return make()
        except _Spent:
            self.start_over()
            return make()

    def new_media(self) -> dict[str, Any]:
        """A pending upload of the owner's."""
        return self._post("/api/v1/media", files={"file": ("p.png", png(), "image/png")})

    def media(self) -> dict[str, Any]:
        return self._once("media", self.new_media)  # type: ignore[no-any-return]

    def post(self) -> dict[str, Any]:
        return self._once(  # type: ignore[no-any-return]
            "post",
            lambda: self._post(
                "/api/v1/posts", json={"caption": "fuzz", "media_ids": [self.new_media()["id"]]}
            ),
        )

    def message(self) -> dict[str, Any]:
        return self._once(  # type: ignore[no-any-return]
            "message",
            lambda: self._post(
                f"/api/v1/posts/{self.post()['id']}/messages", json={"message": "fuzz"}
            ),
        )

    def upload(self) -> dict[str, Any]:
        """A direct upload whose file is in the bucket, ready to complete."""

        def make() -> dict[str, Any]:
            upload = self._post("/api/v1/media/uploads", json={"content_type": "image/png"})
            with client(upload["url"]) as bucket:
                sent = bucket.post(
                    "", data=upload["fields"], files={"file": ("p.png", png(), "image/png")}
                )
            assert sent.status_code < 300, sent.text
            return upload

        return self._once("upload", make)  # type: ignore[no-any-return]

    def path_parameters(self, names: set[str]) -> dict[str, str]:
        """Real values for the path parameters ``names``."""
        if names == {"post_id", "message_id"}:
            message = self.message()
            return {"post_id": message["post_id"], "message_id": message["id"]}
        values: dict[str, Callable[[], str]] = {
            "post_id": lambda: self.post()["id"],
            "media_id": lambda: self.media()["id"],
            "upload_id": lambda: self.upload()["id"],
            "username": lambda: self.other.username,
        }
        return {name: values[name]() for name in names}


# What each operation's real resource is called in World, to forget it once deleted.
_CONSUMED_BY_DELETE = {
    "deletePost": "post",
    "deleteMedia": "media",
    "deleteMessage": "message",
    "completeDirectUpload": "upload",
}
# Successful answers after which the owner's session is over.
_ENDS_SESSION = {"changePassword", "logout", "revokeToken", "deleteOwnAccount"}
# Where the gateway ignores an Authorization header.
_TOKEN_IGNORED = {"register", "login", "refreshToken", "revokeToken", "logout", "getJwks"}
# A well-formed JWT that no key of the stack signed.
_FORGED = (
    "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImZvcmdlZCJ9"
    ".eyJzdWIiOiIwMTk1MDAwMC0wMDAwLTcwMDAtODAwMC0wMDAwMDAwMDAwMDAifQ"
    ".c2lnbmF0dXJlLW9mLW5vLWtleQ"
)


@pytest.fixture
def world(stack: Endpoints) -> World:
    return World(stack.gateway_url)


def _security(case: schemathesis.Case[Any]) -> tuple[bool, bool]:
    """Whether the operation takes a bearer token, and whether it needs one."""
    security = case.operation.definition.raw.get("security", [])
    takes = any("bearer" in requirement for requirement in security)
    return takes, takes and {} not in security


def _positive(case: schemathesis.Case[Any]) -> bool:
    return case.meta is not None and not case.meta.generation.mode.is_negative


def _realize(case: schemathesis.Case[Any], data: st.DataObject, world: World) -> bool:
    """Replaces generated ids and secrets with real ones, in about half the valid
    cases (an invalid case stays as invalid as it was made); whether the body was."""
    if not _positive(case):
        return False
    operation = case.operation.definition.raw["operationId"]
    path = set(case.path_parameters or {})
    if "Idempotency-Key" in (case.headers or {}):
        # A key this owner has not used (a used one replays, or is a 422 for another body).
        headers = CaseInsensitiveDict(case.headers)
        headers["Idempotency-Key"] = secrets.token_hex(16)
        case.headers = headers
    if path and bool(data.draw(st.booleans())):
        real = world.real(lambda: world.path_parameters(path))
        case.path_parameters = {**(case.path_parameters or {}), **real}
    if not isinstance(case.body, dict):
        return False
    body: dict[str, Any] = dict(case.body)  # a copy: generated values may be shared between cases
    if not data.draw(st.booleans()):
        return False
    owner = world.owner
    if operation in {"uploadMedia", "uploadImage"}:
        body["image" if "image" in body else "file"] = png()
    elif operation == "createPost":
        media = world.real(world.new_media)
        if "media_ids" in body:
            body["media_ids"] = [media["id"]]
        else:
            body["image_url"] = media["url"]
    elif operation == "login":
        body["password"] = owner.password
        body.pop("email" if "username" in body else "username", None)
        if "username" in body:
            body["username"] = owner.username
        else:
            body["email"] = owner.email
    elif operation == "changePassword":
        body["current_password"] = owner.password
    elif operation == "deleteOwnAccount" and "password" in body:
        body["password"] = owner.password
    elif operation in {"refreshToken", "revokeToken", "logout"}:
        body["refresh_token"] = owner.refresh_token
    case.body = body
    return True


def _excluded_checks(case: schemathesis.Case[Any], realized: bool) -> list[CheckFunction]:
    """The checks this case cannot be held to, each with its reason."""
    operation = case.operation.definition.raw["operationId"]
    body = case.body if isinstance(case.body, dict) else None
    excluded: list[CheckFunction] = []
    if (case.query or {}).get("cursor"):
        # A cursor is opaque: one this API did not issue is refused (422), as
        # documented, however well it fits the parameter's schema.
        excluded.append(positive_data_acceptance)
    if operation in {"uploadMedia", "uploadImage"}:
        description = body.get("description", "") if body is not None else ""
        if not isinstance(description, str | bytes):
            # A form field is text whatever its type was: `false` is sent as "false".
            excluded.append(negative_data_rejection)
        if realized:
            # schemathesis cannot check a body holding binary data against the
            # document, and takes one that was changed (a real image) for invalid.
            excluded.append(negative_data_rejection)
        else:
            # Generated bytes are no image: a 415 (documented).
            excluded.append(positive_data_acceptance)
    if operation == "createPost" and not realized:
        # Generated media ids and image URLs name nobody's uploads: a 422 (documented).
        excluded.append(positive_data_acceptance)
    if operation in {"refreshToken", "revokeToken", "logout"} and (
        CaseInsensitiveDict(case.headers).get("X-Refresh-Cookie") == "1"
    ):
        # In cookie mode the refresh token is the cookie's and a body, any
        # body, is ignored (the document says so): nothing to reject.
        excluded.append(negative_data_rejection)
    return excluded


def _excluded_for_answer(
    case: schemathesis.Case[Any], response: schemathesis.Response
) -> list[CheckFunction]:
    """The checks an answer cannot be held to yet: each a finding for the lead,
    in files this test's author could not change."""
    excluded: list[CheckFunction] = []
    problem = _problem(response)
    if (
        case.operation.definition.raw["operationId"] == "register"
        and response.status_code == 422
        and any(error.get("field") == "email" for error in problem.get("errors") or [])
    ):
        # An address `format: email` takes is refused when its domain is a
        # special-use one (`a@0o.test`, RFC 6761): the field's description
        # says so, which no JSON Schema keyword can.
        excluded.append(positive_data_acceptance)
    return excluded


def _problem(response: schemathesis.Response) -> dict[str, Any]:
    try:
        problem = response.json()
    except ValueError:
        return {}
    return problem if isinstance(problem, dict) else {}


@pytest.mark.parametrize("keep", ["\n", "\n\t"])
def test_the_documented_text_patterns_take_what_clean_text_takes(keep: str) -> None:
    # The document's patterns (social_common.models.text_pattern) and the
    # services' check (social_common.validation.clean_text), one character at a time.
    anything, something = (
        re.compile(text_pattern(keep)),
        re.compile(text_pattern(keep, blank=False)),
    )
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        try:
            kept = clean_text("text", char, 8, keep=keep)
        except Problem:
            kept = None
        assert bool(anything.fullmatch(char)) == (kept is not None), hex(code)
        assert bool(something.fullmatch(char)) == bool(kept), hex(code)


@SCHEMA.parametrize()
@SCHEMA.given(data=st.data())
@hypothesis.settings(
    deadline=None,
    # One world per operation: its account and things serve every example.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
def test_operation_conforms_to_the_document(
    case: schemathesis.Case[Any], data: st.DataObject, stack: Endpoints, world: World
) -> None:
    operation = case.operation.definition.raw["operationId"]
    realized = _realize(case, data, world)
    takes_token, needs_token = _security(case)
    headers: dict[str, str] = {}
    if needs_token:
        # The generated token becomes the owner's, unless the case is about a
        # missing or broken one (then the answer must be a 401).
        generated = "Authorization" in (case.headers or {})
        if generated and not (case.meta and case.meta.is_negative_at(ParameterLocation.HEADER)):
            headers = world.owner.auth
    elif operation not in _TOKEN_IGNORED:
        # Where a token is optional, or not asked for, one that is sent must be
        # valid (the gateway checks it, 401): none, the owner's, or a forged one.
        token = data.draw(
            st.sampled_from(["none", "owner", "forged"] if takes_token else ["none", "forged"])
        )
        if token == "owner":
            headers = world.owner.auth
        elif token == "forged":
            headers = {"Authorization": f"Bearer {_FORGED}"}
    excluded = _excluded_checks(case, realized)
    with _session() as session:
        response = case.call(base_url=stack.gateway_url, session=session, headers=headers)
        excluded += _excluded_for_answer(case, response)
        case.validate_response(
            response,
            headers=headers,
            excluded_checks=excluded,
            transport_kwargs={
                "base_url": stack.gateway_url,
                "session": session,
                "headers": headers,
            },
        )
    if response.status_code == 429 or (operation in _ENDS_SESSION and response.status_code == 204):
        world.start_over()
    elif operation in _CONSUMED_BY_DELETE and response.status_code in {201, 204}:
        world.forget(_CONSUMED_BY_DELETE[operation])
    elif operation == "refreshToken" and response.status_code == 200:
        world.start_over()  # the owner's refresh token is spent

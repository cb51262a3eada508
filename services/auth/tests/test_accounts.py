"""Registration, login and profiles, through the gateway."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
from argon2 import PasswordHasher
from social_stack.local import Endpoints
from social_stack.testing import client, create_account, unique_name


def _register(stack: Endpoints, **body: object) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.post("/api/v1/users/register", json=body)


def test_register_returns_the_user_without_any_secret(stack: Endpoints) -> None:
    name = unique_name()
    response = _register(
        stack, username=name.upper(), email=f"{name}@Example.COM", password="a long passphrase"
    )
    assert response.status_code == 201
    user = response.json()
    assert user["username"] == name  # stored in lower case
    assert user["email"] == f"{name}@example.com"  # the domain is normalized
    assert set(user) == {
        "id", "username", "email", "display_name", "bio",
        "follower_count", "following_count", "created_at",
    }  # fmt: skip
    assert "passphrase" not in response.text
    assert "argon2" not in response.text


def test_usernames_and_emails_are_unique_case_insensitively(stack: Endpoints) -> None:
    name = unique_name()
    assert (
        _register(stack, username=name, email=f"{name}@a.example", password="p" * 12).status_code
        == 201
    )
    again = _register(stack, username=name.upper(), email=f"{name}@b.example", password="p" * 12)
    assert (again.status_code, again.json()["code"]) == (409, "username_taken")
    same_email = _register(
        stack, username=unique_name(), email=f"{name.upper()}@A.example", password="p" * 12
    )
    assert (same_email.status_code, same_email.json()["code"]) == (409, "email_taken")


def test_a_burst_of_sign_ups_for_one_name_gets_one_account_and_409s(stack: Endpoints) -> None:
    # Far more than the hashing pool admits at once (workers x 8): before,
    # the ones past it were answered 503 "busy" although a 409 needs no hash.
    name = unique_name()
    burst = [
        {"username": name, "email": f"{name}.{i}@example.com", "password": "p" * 12}
        for i in range(40)
    ] + [
        {"username": f"{name}_{i}", "email": f"{name}@example.com", "password": "p" * 12}
        for i in range(40)
    ]
    with ThreadPoolExecutor(max_workers=len(burst)) as pool:
        answers = list(pool.map(lambda body: _register(stack, **body), burst))
    by_status = Counter(answer.status_code for answer in answers)
    assert by_status[201] == 2, by_status  # one of each group: they share nothing
    assert by_status[201] + by_status[409] == len(burst), by_status
    codes = Counter(answer.json()["code"] for answer in answers if answer.status_code == 409)
    assert set(codes) <= {"username_taken", "email_taken"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "ab", "email": "x@example.com", "password": "p" * 12}, "username"),
        ({"username": "bad-name!", "email": "x@example.com", "password": "p" * 12}, "username"),
        ({"username": "a" * 31, "email": "x@example.com", "password": "p" * 12}, "username"),
        ({"username": "profile", "email": "x@example.com", "password": "p" * 12}, "username"),
        ({"username": "fine_name", "email": "not-an-email", "password": "p" * 12}, "email"),
        ({"username": "fine_name", "email": "x@example.com", "password": "short"}, "password"),
        ({"username": "fine_name", "email": "x@example.com", "password": "p" * 129}, "password"),
        (
            {"username": "fine_name", "email": "x@example.com", "password": "password123"},
            "password",
        ),
        ({"username": "fine_name", "email": "x@example.com", "password": "1234567890"}, "password"),
        ({"username": "fine_name", "email": "x@example.com"}, "password"),
        ({"username": "fine_name", "email": "x@example.com", "password": 12345678901}, "password"),
        (
            {
                "username": "fine_name",
                "email": "x@example.com",
                "password": "p" * 12,
                "is_admin": True,
            },
            "is_admin",
        ),
    ],
)
def test_invalid_registrations_are_refused_per_field(
    stack: Endpoints, body: dict[str, object], field: str
) -> None:
    response = _register(stack, **body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]


def test_bodies_that_are_not_json_objects_are_refused(stack: Endpoints) -> None:
    with client(stack.gateway_url) as http:
        not_json = http.post(
            "/api/v1/users/register", content=b"{nope", headers={"content-type": "application/json"}
        )
        form = http.post("/api/v1/users/register", data={"username": "x"})
        huge = http.post(
            "/api/v1/users/register",
            json={"username": "x", "email": "x@example.com", "password": "p" * 100_000},
        )
    assert (not_json.status_code, not_json.json()["code"]) == (400, "invalid_json")
    assert form.status_code == 415
    assert huge.status_code == 413


def test_login_by_email_or_username_gives_tokens(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        by_name = http.post(
            "/api/v1/users/login",
            json={"username": account.username.upper(), "password": account.password},
        )
        by_email = http.post(
            "/api/v1/users/login",
            json={"email": account.email.upper(), "password": account.password},
        )
    assert by_email.status_code == 200
    assert by_email.json()["user_id"] == account.id
    assert by_name.status_code == 200
    session = by_name.json()
    assert session["token_type"] == "Bearer"
    assert session["expires_in"] == 900
    assert session["refresh_expires_in"] == 30 * 24 * 3600
    assert session["user_id"] == account.id
    assert session["access_token"].count(".") == 2
    assert session["refresh_token"].count(".") == 0  # opaque, not a JWT


def _timed_login(stack: Endpoints, body: dict[str, str]) -> tuple[httpx.Response, float]:
    with client(stack.gateway_url) as http:
        started = time.perf_counter()
        response = http.post("/api/v1/users/login", json=body)
        return response, time.perf_counter() - started


def test_unknown_user_and_wrong_password_look_the_same(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    wrong = [
        _timed_login(stack, {"email": account.email, "password": "wrong password!"})
        for _ in range(3)
    ]
    unknown = [
        _timed_login(
            stack, {"email": f"{unique_name()}@example.com", "password": "wrong password!"}
        )
        for _ in range(3)
    ]
    bodies = set()
    for response, _ in wrong + unknown:
        assert response.status_code == 401
        body = response.json()
        body.pop("request_id")
        bodies.add(tuple(sorted(body.items())))
    assert len(bodies) == 1
    # Both paths run an argon2 verification: neither is a shortcut (which would
    # be an order of magnitude faster; the margin absorbs a busy machine).
    median_wrong = statistics.median(t for _, t in wrong)
    median_unknown = statistics.median(t for _, t in unknown)
    assert median_unknown > median_wrong / 3
    assert median_wrong > median_unknown / 3


def test_login_rehashes_a_password_stored_with_weaker_parameters(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(account.password)
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        conn.execute("UPDATE auth.users SET password_hash = %s WHERE id = %s", (weak, account.id))
    with client(stack.gateway_url) as http:
        login = http.post(
            "/api/v1/users/login", json={"email": account.email, "password": account.password}
        )
    assert login.status_code == 200
    with psycopg.connect(stack.database_admin_url) as conn:
        row = conn.execute(
            "SELECT password_hash FROM auth.users WHERE id = %s", (account.id,)
        ).fetchone()
    assert row is not None
    assert row[0].startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_profile_shows_and_changes_only_what_it_may(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        me = http.get("/api/v1/users/profile", headers=account.auth)
        assert (me.status_code, me.json()["email"]) == (200, account.email)
        changed = http.patch(
            "/api/v1/users/profile",
            headers=account.auth,
            json={"display_name": "  Ada Lovelace ", "bio": "Analyst.\nEngine enthusiast."},
        )
        assert changed.status_code == 200
        assert changed.json()["display_name"] == "Ada Lovelace"
        for field, value in [
            ("is_admin", True), ("id", "00000000-0000-0000-0000-000000000000"),
            ("created_at", "2000-01-01T00:00:00Z"), ("username", "someone_else"),
            ("email", "x@example.com"), ("display_name", "x" * 51), ("bio", "x" * 501),
            ("display_name", "bell\x07"), ("bio", 42),
        ]:  # fmt: skip
            refused = http.patch("/api/v1/users/profile", headers=account.auth, json={field: value})
            assert refused.status_code == 422, (field, refused.text)
            assert refused.json()["errors"][0]["field"] == field
        after = http.get("/api/v1/users/profile", headers=account.auth).json()
    assert after["display_name"] == "Ada Lovelace"
    assert after["username"] == account.username
    assert after["id"] == account.id
    with psycopg.connect(stack.database_admin_url) as conn:
        row = conn.execute(
            "SELECT is_admin FROM auth.users WHERE id = %s", (account.id,)
        ).fetchone()
    assert row == (False,)


def test_public_profile_needs_no_token_and_hides_the_email(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        anonymous = http.get(f"/api/v1/users/{account.username}")
        missing = http.get(f"/api/v1/users/{unique_name()}")
    assert anonymous.status_code == 200
    assert anonymous.json()["username"] == account.username
    assert "email" not in anonymous.json()
    assert "followed_by_me" not in anonymous.json()
    assert (missing.status_code, missing.json()["code"]) == (404, "user_not_found")


def test_nulls_and_nul_characters_are_field_errors_not_crashes(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        null_bio = http.patch("/api/v1/users/profile", headers=account.auth, json={"bio": None})
        nul_login = http.post(
            "/api/v1/users/login", json={"username": "a\x00b", "password": "whatever it is"}
        )
        nul_path = http.get("/api/v1/users/a%00b")
    assert (null_bio.status_code, null_bio.json()["errors"][0]["field"]) == (422, "bio")
    assert (nul_login.status_code, nul_login.json()["errors"][0]["field"]) == (422, "username")
    assert nul_path.status_code in (400, 404)

"""The auth service's rate limits, with their headers, through the gateway."""

from __future__ import annotations

from social_stack.local import Endpoints
from social_stack.testing import client, create_account, fresh_address, unique_name


def test_login_is_limited_to_five_a_minute_per_account(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    statuses = []
    for _ in range(6):
        # A new address each time: only the account's budget is spent.
        with client(stack.gateway_url) as http:
            response = http.post(
                "/api/v1/users/login", json={"email": account.email, "password": "wrong password!"}
            )
        statuses.append(response.status_code)
    # create_account's own login spent one of the five.
    assert statuses == [401, 401, 401, 401, 429, 429]
    assert response.headers["retry-after"].isdigit()
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-remaining"] == "0"
    assert response.json()["code"] == "rate_limited"


def test_login_is_limited_to_twenty_a_minute_per_address(stack: Endpoints) -> None:
    with client(stack.gateway_url, address=fresh_address()) as http:
        statuses = [
            http.post(
                "/api/v1/users/login",
                json={"username": unique_name(), "password": "whatever it is"},
            ).status_code
            for _ in range(21)
        ]
    assert statuses == [401] * 20 + [429]


def test_successful_responses_carry_the_limit_headers(stack: Endpoints) -> None:
    with client(stack.gateway_url) as http:
        name = unique_name()
        response = http.post(
            "/api/v1/users/register",
            json={"username": name, "email": f"{name}@example.com", "password": "long enough pw"},
        )
    assert response.status_code == 201
    assert response.headers["x-ratelimit-limit"] == "5"
    assert response.headers["x-ratelimit-remaining"] == "4"
    assert int(response.headers["x-ratelimit-reset"]) > 0


def test_registration_is_limited_to_five_per_half_hour_per_address(stack: Endpoints) -> None:
    with client(stack.gateway_url, address=fresh_address()) as http:
        statuses = []
        for _ in range(6):
            name = unique_name()
            statuses.append(
                http.post(
                    "/api/v1/users/register",
                    json={"username": name, "email": f"{name}@example.com", "password": "pw" * 6},
                ).status_code
            )
        limited = http.post("/api/v1/users/register", json={})
    assert statuses == [201] * 5 + [429]
    assert 300 <= int(limited.headers["retry-after"]) <= 360

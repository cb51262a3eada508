"""Browser sessions: the refresh token as an HttpOnly cookie only the token
paths receive, asked for (and guarded against other sites) by a header."""

from __future__ import annotations

from http.cookies import SimpleCookie

import httpx
from social_stack.local import Endpoints
from social_stack.testing import Account, client, create_account

COOKIE = "__Secure-refresh-token"
COOKIE_MODE = {"X-Refresh-Cookie": "1"}


def _cookie(response: httpx.Response) -> tuple[str, dict[str, str]]:
    """The refresh cookie a response sets: its value and its attributes."""
    jar = SimpleCookie(response.headers["set-cookie"])
    morsel = jar[COOKIE]
    attributes = {key: str(value) for key, value in morsel.items() if value}
    return morsel.value, attributes


def _browser_login(http: httpx.Client, account: Account) -> httpx.Response:
    return http.post(
        "/api/v1/users/login",
        headers=COOKIE_MODE,
        json={"username": account.username, "password": account.password},
    )


def _with_cookie(token: str, **headers: str) -> dict[str, str]:
    # Sent by hand: a Secure cookie is never sent over plain HTTP by a cookie
    # jar, while browsers treat loopback as secure.
    return {**COOKIE_MODE, "Cookie": f"{COOKIE}={token}", **headers}


def test_login_sets_the_refresh_token_as_a_cookie_scripts_cannot_read(
    stack: Endpoints,
) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        login = _browser_login(http, account)
    assert login.status_code == 200
    session = login.json()
    assert "refresh_token" not in session
    assert session["access_token"]
    assert session["expires_in"] > 0
    token, attributes = _cookie(login)
    assert len(token) > 30
    assert attributes["path"] == "/api/v1/users/token"
    assert attributes["httponly"]
    assert attributes["secure"]
    assert attributes["samesite"] == "Strict"
    assert int(attributes["max-age"]) == session["refresh_expires_in"]


def test_the_cookie_refreshes_rotates_and_is_cleared_once_spent(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        first, _ = _cookie(_browser_login(http, account))
        refreshed = http.post("/api/v1/users/token/refresh", headers=_with_cookie(first))
        second, _ = _cookie(refreshed)
        reused = http.post("/api/v1/users/token/refresh", headers=_with_cookie(first))
    assert refreshed.status_code == 200
    assert "refresh_token" not in refreshed.json()
    assert second != first
    assert (reused.status_code, reused.json()["code"]) == (401, "invalid_refresh_token")
    cleared, attributes = _cookie(reused)
    assert (cleared, attributes["max-age"]) == ("", "0")


def test_the_cookie_alone_is_ignored_and_another_site_is_refused(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        token, _ = _cookie(_browser_login(http, account))
        # Without the header (a form another site submits) the cookie is not read.
        no_header = http.post(
            "/api/v1/users/token/refresh", headers={"Cookie": f"{COOKIE}={token}"}
        )
        cross_site = http.post(
            "/api/v1/users/token/refresh",
            headers=_with_cookie(token, **{"Sec-Fetch-Site": "cross-site"}),
        )
        # Neither spent the token.
        same_origin = http.post(
            "/api/v1/users/token/refresh",
            headers=_with_cookie(token, **{"Sec-Fetch-Site": "same-origin"}),
        )
    # It presented no refresh token: the cookie counts for nothing.
    assert (no_header.status_code, no_header.json()["code"]) == (401, "invalid_refresh_token")
    assert (cross_site.status_code, cross_site.json()["code"]) == (403, "cross_site")
    assert same_origin.status_code == 200


def test_revoke_ends_the_browser_session_and_clears_the_cookie(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        token, _ = _cookie(_browser_login(http, account))
        revoked = http.post("/api/v1/users/token/revoke", headers=_with_cookie(token))
        after = http.post("/api/v1/users/token/refresh", headers=_with_cookie(token))
    assert revoked.status_code == 204
    cleared, attributes = _cookie(revoked)
    assert (cleared, attributes["max-age"], attributes["path"]) == ("", "0", "/api/v1/users/token")
    assert after.status_code == 401

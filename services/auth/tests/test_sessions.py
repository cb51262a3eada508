"""Sessions: refresh-token rotation, reuse detection, logout and password
changes, and the revocation of access tokens and sockets they bring."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from social_stack.local import Endpoints
from social_stack.testing import (
    Account,
    client,
    close_of,
    create_account,
    create_post,
    wait_until,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect


def _refresh(stack: Endpoints, token: str) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.post("/api/v1/users/token/refresh", json={"refresh_token": token})


def _login(stack: Endpoints, account: Account, password: str | None = None) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.post(
            "/api/v1/users/login",
            json={"email": account.email, "password": password or account.password},
        )


def test_refresh_rotates_both_tokens(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    first = _refresh(stack, account.refresh_token)
    assert first.status_code == 200
    session = first.json()
    assert session["refresh_token"] != account.refresh_token
    assert session["access_token"] != account.access_token
    with client(stack.gateway_url) as http:
        me = http.get(
            "/api/v1/users/profile", headers={"Authorization": f"Bearer {session['access_token']}"}
        )
    assert me.json()["id"] == account.id
    assert _refresh(stack, session["refresh_token"]).status_code == 200


def test_a_spent_refresh_token_revokes_its_whole_family(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    rotated = _refresh(stack, account.refresh_token).json()["refresh_token"]
    # The old token again: someone copied it. Both it and its successor die.
    reuse = _refresh(stack, account.refresh_token)
    assert (reuse.status_code, reuse.json()["code"]) == (401, "invalid_refresh_token")
    assert _refresh(stack, rotated).status_code == 401
    # Other sessions of the same account are not touched.
    other = _login(stack, account).json()["refresh_token"]
    assert _refresh(stack, other).status_code == 200


def _race(stack: Endpoints, token: str) -> list[int]:
    """Two refreshes with one token, released at the same instant."""
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def refresh() -> None:
        barrier.wait()
        statuses.append(_refresh(stack, token).status_code)

    threads = [threading.Thread(target=refresh) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_two_concurrent_refreshes_with_one_token_exactly_one_wins(stack: Endpoints) -> None:
    for _ in range(3):
        account = create_account(stack.gateway_url)
        assert sorted(_race(stack, account.refresh_token)) == [200, 401]


def test_unknown_and_garbage_refresh_tokens_are_401(stack: Endpoints) -> None:
    for token in ["nope", "", "x" * 5000, "eyJhbGciOiJub25lIn0.e30."]:
        response = _refresh(stack, token)
        assert response.status_code in (401, 413), token[:20]
        assert response.headers["content-type"] == "application/problem+json"


def test_logout_ends_the_session(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        out = http.post("/api/v1/users/logout", json={"refresh_token": account.refresh_token})
        again = http.post("/api/v1/users/logout", json={"refresh_token": account.refresh_token})
        unknown = http.post("/api/v1/users/logout", json={"refresh_token": "never issued"})
    assert (out.status_code, again.status_code, unknown.status_code) == (204, 204, 204)
    assert _refresh(stack, account.refresh_token).status_code == 401


def test_password_change_needs_the_current_one_and_ends_every_session(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    second_session = _login(stack, account).json()["refresh_token"]
    with client(stack.gateway_url) as http:
        anonymous = http.post(
            "/api/v1/users/password",
            json={"current_password": account.password, "new_password": "a brand new secret"},
        )
        wrong = http.post(
            "/api/v1/users/password",
            headers=account.auth,
            json={"current_password": "not my password", "new_password": "a brand new secret"},
        )
        weak = http.post(
            "/api/v1/users/password",
            headers=account.auth,
            json={"current_password": account.password, "new_password": "qwertyuiop"},
        )
        changed = http.post(
            "/api/v1/users/password",
            headers=account.auth,
            json={"current_password": account.password, "new_password": "a brand new secret"},
        )
    assert anonymous.status_code == 401
    assert (wrong.status_code, wrong.json()["code"]) == (403, "wrong_password")
    assert (weak.status_code, weak.json()["errors"][0]["field"]) == (422, "new_password")
    assert changed.status_code == 204
    assert _refresh(stack, account.refresh_token).status_code == 401
    assert _refresh(stack, second_session).status_code == 401
    assert _login(stack, account).status_code == 401
    assert _login(stack, account, "a brand new secret").status_code == 200


def _answers_everywhere(stack: Endpoints, token: str, post_id: str, media_id: str) -> list[int]:
    """The status each service answers a request with ``token``: 200 (404
    for the message, which does not exist) while it is valid, else 401."""
    auth = {"Authorization": f"Bearer {token}"}
    no_message = f"/api/v1/posts/{post_id}/messages/{uuid.uuid4()}"
    with client(stack.gateway_url) as http:
        return [
            http.get("/api/v1/users/profile", headers=auth).status_code,
            http.get("/api/v1/feed", headers=auth).status_code,
            http.delete(no_message, headers=auth).status_code,
            http.get(f"/api/v1/media/{media_id}", headers=auth).status_code,
        ]


VALID = [200, 200, 404, 200]


def _refused_everywhere(stack: Endpoints, token: str, post: dict[str, Any]) -> Callable[[], bool]:
    media_id = post["media"][0]["id"]
    return lambda: _answers_everywhere(stack, token, post["id"], media_id) == [401] * 4


def test_a_password_change_revokes_every_access_token_and_socket_at_once(
    stack: Endpoints,
) -> None:
    account = create_account(stack.gateway_url)
    post = create_post(stack.gateway_url, account)
    media_id = post["media"][0]["id"]
    other_device = _login(stack, account).json()["access_token"]
    assert _answers_everywhere(stack, other_device, post["id"], media_id) == VALID
    ws_url = stack.gateway_url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers=account.auth, open_timeout=10) as ws:
        with client(stack.gateway_url) as http:
            changed = http.post(
                "/api/v1/users/password",
                headers=account.auth,
                json={"current_password": account.password, "new_password": "a brand new secret"},
            )
        assert changed.status_code == 204
        assert close_of(ws) == (1008, "the session has ended")
    for token in (account.access_token, other_device):
        wait_until(_refused_everywhere(stack, token, post), what="the old tokens refused")
    with pytest.raises(InvalidStatus):
        connect(ws_url, additional_headers=account.auth, open_timeout=10)
    fresh = _login(stack, account, "a brand new secret").json()["access_token"]
    assert _answers_everywhere(stack, fresh, post["id"], media_id) == VALID


def test_logout_revokes_its_access_token_and_no_other(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    post = create_post(stack.gateway_url, account)
    media_id = post["media"][0]["id"]
    other_device = _login(stack, account).json()["access_token"]
    with client(stack.gateway_url) as http:
        out = http.post("/api/v1/users/logout", json={"refresh_token": account.refresh_token})
    assert out.status_code == 204
    wait_until(_refused_everywhere(stack, account.access_token, post), what="its token refused")
    assert _answers_everywhere(stack, other_device, post["id"], media_id) == VALID


def test_a_reused_refresh_token_revokes_the_access_tokens_of_its_family(stack: Endpoints) -> None:
    account = create_account(stack.gateway_url)
    post = create_post(stack.gateway_url, account)
    rotated = _refresh(stack, account.refresh_token).json()["access_token"]
    assert _refresh(stack, account.refresh_token).status_code == 401  # the copy, used again
    for token in (account.access_token, rotated):
        wait_until(_refused_everywhere(stack, token, post), what="the family's tokens refused")

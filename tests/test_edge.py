"""The gateway's policy for what reaches clients: the headers of every API
answer, how a token is read and refused, and what of the bucket /media/ shows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from social_stack.gateway import API_HEADERS
from social_stack.local import Endpoints
from social_stack.testing import (
    Account,
    client,
    create_account,
    create_post,
    fresh_address,
    unique_name,
)

# One request of each route group (and of the gateway's own answers): what
# it sends, its answer's status, and whether the answer may be cached by
# someone (the anonymous reads that revalidate with an ETag, the published keys).
Request = Callable[[httpx.Client, Account, dict[str, Any]], httpx.Response]


def _login(http: httpx.Client, account: Account, _post: dict[str, Any]) -> httpx.Response:
    return http.post(
        "/api/v1/users/login", json={"email": account.email, "password": account.password}
    )


def _refresh(http: httpx.Client, account: Account, _post: dict[str, Any]) -> httpx.Response:
    fresh = _login(http, account, _post).json()
    return http.post("/api/v1/users/token/refresh", json={"refresh_token": fresh["refresh_token"]})


def _register(http: httpx.Client, _account: Account, _post: dict[str, Any]) -> httpx.Response:
    name = unique_name()
    return http.post(
        "/api/v1/users/register",
        json={"username": name, "email": f"{name}@example.com", "password": "p" * 12},
    )


ROUTES: dict[str, tuple[Request, int, bool]] = {
    "register": (_register, 201, False),
    "login": (_login, 200, False),
    "refresh": (_refresh, 200, False),
    "profile": (lambda h, a, _: h.get("/api/v1/users/profile", headers=a.auth), 200, False),
    "public profile": (lambda h, a, _: h.get(f"/api/v1/users/{a.username}"), 200, False),
    "jwks": (lambda h, _a, _p: h.get("/.well-known/jwks.json"), 200, True),
    "global feed": (lambda h, _a, _p: h.get("/api/v1/posts"), 200, True),
    "global feed, signed in": (lambda h, a, _: h.get("/api/v1/posts", headers=a.auth), 200, False),
    "home feed": (lambda h, a, _: h.get("/api/v1/feed", headers=a.auth), 200, False),
    "post": (lambda h, _a, p: h.get(f"/api/v1/posts/{p['id']}"), 200, True),
    "messages": (
        lambda h, a, p: h.post(
            f"/api/v1/posts/{p['id']}/messages", headers=a.auth, json={"message": "hi"}
        ),
        201,
        False,
    ),
    "media": (
        lambda h, a, p: h.get(f"/api/v1/media/{p['media'][0]['id']}", headers=a.auth),
        200,
        False,
    ),
    "realtime": (lambda h, _a, _p: h.get("/api/v1/realtime/healthz"), 200, False),
    "openapi": (lambda h, _a, _p: h.get("/api/v1/openapi.json"), 200, False),
    "unknown path": (lambda h, _a, _p: h.get("/api/v1/nothing-here"), 404, False),
    "no token": (lambda h, _a, _p: h.get("/api/v1/feed"), 401, False),
    "bad token": (
        lambda h, _a, _p: h.get("/api/v1/feed", headers={"Authorization": "Bearer x.y.z"}),
        401,
        False,
    ),
    "invalid body": (
        lambda h, a, _: h.post("/api/v1/posts", headers=a.auth, json={"caption": 1}),
        422,
        False,
    ),
}


@pytest.fixture(scope="module")
def author(stack: Endpoints) -> tuple[Account, dict[str, Any]]:
    account = create_account(stack.gateway_url)
    return account, create_post(stack.gateway_url, account)


@pytest.mark.parametrize("route", ROUTES)
def test_every_api_answer_carries_the_policy_headers(
    stack: Endpoints, author: tuple[Account, dict[str, Any]], route: str
) -> None:
    request, status, cacheable = ROUTES[route]
    account, post = author
    with client(stack.gateway_url) as http:
        response = request(http, account, post)
    assert response.status_code == status, response.text
    for name, value in API_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    cache_control = response.headers.get("cache-control", "")
    if cacheable:
        assert "no-store" not in cache_control
    else:
        assert cache_control == "no-store"


def _from_the_gateways_cache(http: httpx.Client, path: str, **kwargs: Any) -> httpx.Response:
    """The answer to ``path`` once the gateway has kept one: of three asked at
    once, at most the first finds the kept one out of date (it lives a second)."""
    answers = [http.get(path, **kwargs) for _ in range(3)]
    return next((a for a in answers if "age" in a.headers), answers[-1])


def test_the_gateway_answers_the_global_feeds_first_page_to_anonymous_readers(
    stack: Endpoints, account: Account
) -> None:
    with client(stack.gateway_url) as http:
        kept = _from_the_gateways_cache(http, "/api/v1/posts")
        assert "age" in kept.headers, kept.headers
        assert kept.status_code == 200
        assert "s-maxage=" in kept.headers["cache-control"]
        # What the route adds to an API answer, and the Vary for caches after it.
        assert kept.headers["vary"] == "Authorization"
        for name, value in API_HEADERS.items():
            assert kept.headers.get(name) == value, (name, kept.headers)
        # Another page, a signed-in reader, a validator: the service answers.
        for path, headers in (
            ("/api/v1/posts?limit=5", {}),
            ("/api/v1/posts", account.auth),
            ("/api/v1/posts", {"If-None-Match": kept.headers["etag"]}),
        ):
            answer = _from_the_gateways_cache(http, path, headers=headers)
            assert "age" not in answer.headers, (path, headers)


def test_a_new_post_reaches_the_gateways_copy_within_its_lifetime(
    stack: Endpoints, account: Account
) -> None:
    with client(stack.gateway_url) as http:
        kept = _from_the_gateways_cache(http, "/api/v1/posts")
        lifetime = int(kept.headers["cache-control"].rsplit("s-maxage=", 1)[1])
        post = create_post(stack.gateway_url, account)
        # A reader who asks for no stored answer sees it at once.
        fresh = http.get("/api/v1/posts", headers={"Cache-Control": "no-cache"})
        assert fresh.json()["items"][0]["id"] == post["id"]
        deadline = time.monotonic() + lifetime + 1
        while http.get("/api/v1/posts").json()["items"][0]["id"] != post["id"]:
            assert time.monotonic() < deadline, "the gateway kept the page past its s-maxage"
            time.sleep(0.05)


def test_the_bearer_scheme_is_case_insensitive(stack: Endpoints, account: Account) -> None:
    with client(stack.gateway_url) as http:
        for scheme in ("bearer", "BEARER", "BeArEr"):
            headers = {"Authorization": f"{scheme} {account.access_token}"}
            required = http.get("/api/v1/users/profile", headers=headers)
            assert required.status_code == 200, (scheme, required.text)
            optional = http.get("/api/v1/posts", headers=headers)
            assert optional.status_code == 200, (scheme, optional.text)
        for other in ("Basic dXNlcjpwYXNz", f"Token {account.access_token}", "Bearer"):
            refused = http.get("/api/v1/users/profile", headers={"Authorization": other})
            assert refused.status_code == 401, other


INVALID = 'Bearer error="invalid_token"'


@pytest.mark.parametrize(
    ("authorization", "detail", "challenge"),
    [
        (None, "A bearer access token is required.", "Bearer"),
        ("Bearer not-a-jwt", "The access token is invalid or expired.", INVALID),
        (
            # Well formed, signed by a key nobody published.
            "Bearer eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6Im5vLXN1Y2gta2V5In0"
            ".eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
            "The access token is invalid or expired.",
            INVALID,
        ),
    ],
)
def test_a_refused_token_is_a_plain_401_problem(
    stack: Endpoints, authorization: str | None, detail: str, challenge: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with client(stack.gateway_url) as http:
        refused = http.get("/api/v1/feed", headers=headers)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.headers["www-authenticate"] == challenge
    problem = refused.json()
    assert (problem["code"], problem["detail"]) == ("unauthorized", detail)
    # Nothing of Envoy's reasons ("Jwt is missing", "Jwks doesn't have key to match kid").
    assert "jw" not in refused.text.lower().replace("unauthorized", "")


def _image_path(stack: Endpoints, account: Account) -> str:
    post = create_post(stack.gateway_url, account)
    url: str = post["media"][0]["url"]
    return url.removeprefix(stack.gateway_url)


@pytest.mark.parametrize(
    "query",
    [
        "response-content-type=text/html&response-content-disposition=inline",
        "acl",
        "tagging",
        "versions",
        "x-id=GetObject",
    ],
)
def test_no_query_string_reaches_the_bucket(stack: Endpoints, account: Account, query: str) -> None:
    path = _image_path(stack, account)
    with client(stack.gateway_url) as http:
        served = http.get(path)
        assert served.status_code == 200, (served.headers, served.text)
        refused = http.get(f"{path}?{query}")
    assert refused.status_code == 404, (refused.headers, refused.text)
    assert refused.headers["content-type"] == "application/problem+json"
    assert "text/html" not in refused.headers.get("content-type", "")


def test_the_bucket_shows_nothing_of_itself(stack: Endpoints, account: Account) -> None:
    path = _image_path(stack, account)
    with client(stack.gateway_url) as http:
        served = http.get(path)
        missing = http.get(path.rsplit("/", 2)[0] + "/" + "0" * 32 + "/original.png")
        writes = [http.request(method, path) for method in ("PUT", "DELETE", "POST")]
    assert served.status_code == 200
    leaked = [name for name in served.headers if name.startswith(("x-amz-", "seaweed-"))]
    assert leaked == []
    assert served.headers["server"] == "social-gateway"
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    problem = json.loads(missing.text)
    assert problem["code"] == "not_found"
    assert stack.s3_bucket not in missing.text
    assert [w.status_code for w in writes] == [404, 404, 404]


def test_each_client_address_has_a_ceiling(stack: Endpoints) -> None:
    # The test stack has the chart's: 100 a second, 200 at once.
    address = fresh_address()

    def burst(_: int) -> list[httpx.Response]:
        with client(stack.gateway_url, address) as http:
            return [http.get("/api/v1/users/nobody-at-all") for _ in range(40)]

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        answers = [answer for batch in pool.map(burst, range(16)) for answer in batch]
    took = time.monotonic() - started
    served = [a for a in answers if a.status_code == 404]
    limited = [a for a in answers if a.status_code == 429]
    assert len(served) + len(limited) == len(answers)
    assert 200 <= len(served) <= 200 + 100 * (took + 1)
    assert limited[0].headers["retry-after"] == "1"
    assert limited[0].headers["content-type"] == "application/problem+json"
    assert limited[0].json()["code"] == "rate_limited"
    # Another address is not held back.
    with client(stack.gateway_url) as http:
        assert http.get("/api/v1/users/nobody-at-all").status_code == 404

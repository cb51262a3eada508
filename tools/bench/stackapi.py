"""The requests the bench sends itself, outside the load generators:
preparation (register, log in, refresh, upload, post, follow) and cleanup.

Each request goes on a new connection from a chosen loopback source address,
because the auth service rate-limits by client address (see
plans.AddressBlock). ``target`` is anything with a ``base_url`` (model.Settings).

The bench's other modules import this one; it imports none of them.
"""

from __future__ import annotations

import http.client
import json
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, Protocol

from auth.settings import AuthSettings

JSON_HEADERS = {"Content-Type": "application/json"}
REGISTER_PATH = "/api/v1/users/register"
LOGIN_PATH = "/api/v1/users/login"
REFRESH_PATH = "/api/v1/users/token/refresh"
MEDIA_PATH = "/api/v1/media"
POSTS_PATH = "/api/v1/posts"
# Per 30 minutes: preparation uses each address once.
REGISTER_PER_ADDRESS = AuthSettings.register_per_ip.limit
# The source address of requests whose limits are per user, not per address.
DEFAULT_SOURCE = "127.0.0.1"
# A full processing pool answers an upload 503: wait this long, this many times.
BUSY_RETRY_S = 0.2
BUSY_RETRIES = 25


class BenchError(Exception):
    """A problem the user must fix; __main__.main() prints it and exits non-zero."""


class Target(Protocol):
    """Where the stack is (model.Settings is one)."""

    @property
    def base_url(self) -> str: ...


def http_request(
    target: Target,
    method: str,
    path: str,
    body: str | bytes,
    headers: Mapping[str, str],
    source: str = DEFAULT_SOURCE,
) -> tuple[int, str, bytes]:
    """Send one request from the loopback address ``source``; return the
    status, the Retry-After header and the body."""
    parts = urllib.parse.urlsplit(target.base_url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(
        parts.hostname or "", parts.port, timeout=30, source_address=(source, 0)
    )
    payload = body.encode() if isinstance(body, str) else body
    try:
        connection.request(method, parts.path + path, body=payload, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.getheader("Retry-After") or "?", response.read()
    except OSError as exc:
        raise BenchError(
            f"{method} {target.base_url}{path} from {source} failed ({exc}); the bench "
            "binds 127.x.y.z source addresses, which Linux routes to lo without setup"
        ) from exc
    finally:
        connection.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _json(what: str, status: int, body: bytes, expect: int) -> Any:
    if status != expect:
        raise BenchError(f"{what}: {status} {body[:300]!r}")
    return json.loads(body)


def register(target: Target, username: str, password: str, source: str) -> str:
    """Register one bench account from ``source``; return its id, or raise
    unless it is created."""
    payload = {"username": username, "email": f"{username}@bench.example", "password": password}
    status, retry_after, body = http_request(
        target, "POST", REGISTER_PATH, json.dumps(payload), JSON_HEADERS, source
    )
    if status == 429:
        raise BenchError(
            f"registering from {source}: 429 (retry after {retry_after}s): this address "
            f"registered {REGISTER_PER_ADDRESS} accounts in the last 30 minutes; was another "
            "run started in the same second?"
        )
    return str(_json(f"registering {username} from {source}", status, body, 201)["id"])


def _session(what: str, status: int, body: bytes) -> tuple[str, str]:
    document = _json(what, status, body, 200)
    access, refresh = document.get("access_token"), document.get("refresh_token")
    if not isinstance(access, str) or not access or not isinstance(refresh, str):
        raise BenchError(f"{what}: no tokens in {body[:300]!r}")
    return access, refresh


def login_session(target: Target, username: str, password: str, source: str) -> tuple[str, str]:
    """Log in once from ``source``; return the access and refresh tokens."""
    payload = {"username": username, "password": password}
    status, _retry_after, body = http_request(
        target, "POST", LOGIN_PATH, json.dumps(payload), JSON_HEADERS, source
    )
    return _session(f"logging in {username} from {source}", status, body)


def login(target: Target, username: str, password: str, source: str) -> str:
    """Log in once from ``source``; return the access token."""
    return login_session(target, username, password, source)[0]


def refresh(target: Target, refresh_token: str) -> tuple[str, str] | None:
    """Trade a refresh token for new tokens (no hash, no rate limit); None
    if the token is no longer valid (then log in again)."""
    status, _retry_after, body = http_request(
        target, "POST", REFRESH_PATH, json.dumps({"refresh_token": refresh_token}), JSON_HEADERS
    )
    if status == 401:
        return None
    return _session("refreshing a token", status, body)


def multipart_body(data: bytes, filename: str, content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body with ``data`` as the field ``file``, as the
    app (and k6_upload.js) sends it, and its Content-Type."""
    boundary = "bench-" + secrets.token_hex(16)
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(
    target: Target, token: str, data: bytes, filename: str, content_type: str
) -> tuple[str, int]:
    """Upload one file as the token's user; return the media id and the
    attempts it took. A 503 (the processing pool is full) is retried a few
    times; each attempt spends one of the user's upload budget."""
    body, content_type_header = multipart_body(data, filename, content_type)
    headers = {**bearer(token), "Content-Type": content_type_header}
    for attempt in range(1, BUSY_RETRIES + 1):
        status, retry_after, reply = http_request(target, "POST", MEDIA_PATH, body, headers)
        if status == 429:
            raise BenchError(f"uploading: 429 (retry after {retry_after}s): over the upload limit")
        if status != 503:
            return str(_json("uploading", status, reply, 201)["id"]), attempt
        time.sleep(BUSY_RETRY_S)
    raise BenchError(f"uploading: still 503 after {BUSY_RETRIES} tries")


def create_post(target: Target, token: str, media_id: str, caption: str) -> str:
    """Post one media as the token's user; return the post id."""
    payload = json.dumps({"caption": caption, "media_ids": [media_id]})
    status, retry_after, body = http_request(
        target, "POST", POSTS_PATH, payload, {**bearer(token), **JSON_HEADERS}
    )
    if status == 429:
        raise BenchError(f"posting: 429 (retry after {retry_after}s): over the post limit")
    return str(_json("posting", status, body, 201)["id"])


def follow(target: Target, token: str, username: str) -> None:
    """Follow ``username`` as the token's user (idempotent)."""
    status, _retry_after, body = http_request(
        target, "POST", f"/api/v1/users/{username}/follow", "", bearer(token)
    )
    if status != 204:
        raise BenchError(f"following {username}: {status} {body[:300]!r}")


def get_json(target: Target, path: str, token: str | None = None) -> Any:
    """GET ``path`` (anonymously without a token); the JSON body, None on 404."""
    status, _retry_after, body = http_request(
        target, "GET", path, "", bearer(token) if token else {}
    )
    if status == 404:
        return None
    return _json(f"GET {path}", status, body, 200)


def delete(target: Target, path: str, authorization: str) -> int:
    """DELETE ``path`` (a media's or a post's) with the owner's Authorization
    header; return the status."""
    status, _retry_after, _body = http_request(
        target, "DELETE", path, "", {"Authorization": authorization}
    )
    return status


def post_message(target: Target, token: str, post_id: str, text: str) -> None:
    """Post a message on ``post_id`` as the token's user."""
    status, retry_after, body = http_request(
        target,
        "POST",
        f"{POSTS_PATH}/{post_id}/messages",
        json.dumps({"message": text}),
        {**bearer(token), **JSON_HEADERS},
    )
    if status == 429:
        raise BenchError(f"messaging: 429 (retry after {retry_after}s): over the message limit")
    _json("messaging", status, body, 201)

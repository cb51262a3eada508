"""Helpers for tests against a running stack.

Every client speaks from its own loopback address (all of 127.0.0.0/8 is
local), so the per-address rate limits of one test never spend another's.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

_addresses = itertools.count(1)


def fresh_address() -> str:
    """A loopback address no other client of this session has used."""
    n = next(_addresses)
    return f"127.1.{n // 250 % 250}.{n % 250 + 1}"


def client(base_url: str, address: str | None = None) -> httpx.Client:
    """An HTTP client bound to ``address`` (a fresh one by default), no proxies."""
    return httpx.Client(
        base_url=base_url,
        transport=httpx.HTTPTransport(local_address=address or fresh_address()),
        timeout=15.0,
        trust_env=False,
    )


@dataclass
class Account:
    id: str
    username: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def unique_name(prefix: str = "u") -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def create_account(gateway_url: str, password: str | None = None) -> Account:
    """Registers a new account through the gateway and logs it in."""
    username = unique_name()
    email = f"{username}@example.com"
    password = password or f"pw-{secrets.token_hex(8)}"
    with client(gateway_url) as http:
        registered = http.post(
            "/api/v1/users/register",
            json={"username": username, "email": email, "password": password},
        )
        assert registered.status_code == 201, registered.text
        session = http.post("/api/v1/users/login", json={"email": email, "password": password})
        assert session.status_code == 200, session.text
    tokens = session.json()
    return Account(
        id=registered.json()["id"],
        username=username,
        email=email,
        password=password,
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
    )


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Polls ``condition`` until it holds: for states of other processes,
    which this one cannot await."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {timeout:.0f}s: {what or 'condition'}")
        time.sleep(0.02)


def answers(url: str, status: int) -> Callable[[], bool]:
    """A condition: a GET of ``url`` answers ``status`` (no answer counts as no)."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1, trust_env=False).status_code == status
        except httpx.TransportError:
            return False

    return check

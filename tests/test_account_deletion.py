"""Deleting one's account: confirmed by the password, its sessions end at once,
and every service deletes what it held of the user, until nothing of them is
left in any schema or in the bucket; the username stays retired a while."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
from psycopg import sql
from social_common.fleet import roster
from social_stack.local import Endpoints
from social_stack.testing import (
    Account,
    bucket_keys,
    client,
    close_of,
    create_account,
    create_post,
    upload_image,
    wait_until,
)
from websockets.sync.client import connect


def _delete(stack: Endpoints, account: Account, password: str) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.request(
            "DELETE", "/api/v1/users/profile", headers=account.auth, json={"password": password}
        )


def _traces(stack: Endpoints, account: Account) -> list[str]:
    """Where anything of the account is stored: every column of every table of
    every service's schema that holds its id, its username or its address
    (as a value, or inside text, JSON or bytes), but for the retired
    username; and every bucket key under one of its uploads."""
    needles = [account.id, account.username, account.email]
    found = []
    with psycopg.connect(stack.database_admin_url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type"
            " FROM information_schema.columns WHERE table_schema = ANY(%s)",
            (list(roster().database_services),),
        ).fetchall()
        for schema, table, column, data_type in columns:
            if (schema, table) == ("auth", "retired_usernames"):
                continue
            name = sql.Identifier(column)
            if data_type == "uuid":
                condition = sql.SQL("{} = %s::uuid").format(name)
                params: list[Any] = [account.id]
            elif data_type == "bytea":
                condition = sql.SQL(" OR ").join(
                    sql.SQL("position(%s IN {}) > 0").format(name) for _ in needles
                )
                params = [needle.encode() for needle in needles]
            elif data_type in ("text", "jsonb", "json", "character varying"):
                condition = sql.SQL(" OR ").join(
                    sql.SQL("strpos(lower({}::text), %s) > 0").format(name) for _ in needles
                )
                params = [needle.lower() for needle in needles]
            else:
                continue
            query = sql.SQL("SELECT count(*) FROM {}.{} WHERE {}").format(
                sql.Identifier(schema), sql.Identifier(table), condition
            )
            row = conn.execute(query, params).fetchone()
            if row and row[0]:
                found.append(f"{schema}.{table}.{column}")
    return found


def test_deleting_an_account_leaves_nothing_of_it(stack: Endpoints) -> None:
    alice, bob = create_account(stack.gateway_url), create_account(stack.gateway_url)
    alices_post = create_post(stack.gateway_url, alice, "mine")
    bobs_post = create_post(stack.gateway_url, bob, "bob's")
    unattached = upload_image(stack.gateway_url, alice)
    media_dirs = {m["url"].split("/media/")[1].split("/")[0] for m in alices_post["media"]}
    media_dirs.add(unattached["url"].split("/media/")[1].split("/")[0])
    with client(stack.gateway_url) as http:
        for path, who in (
            (f"/api/v1/users/{bob.username}/follow", alice),
            (f"/api/v1/users/{alice.username}/follow", bob),
            (f"/api/v1/posts/{bobs_post['id']}/like", alice),
        ):
            assert http.post(path, headers=who.auth).status_code in (200, 201, 204), path
        for post, who in ((bobs_post, alice), (alices_post, bob), (alices_post, alice)):
            sent = http.post(
                f"/api/v1/posts/{post['id']}/messages", headers=who.auth, json={"message": "hi"}
            )
            assert sent.status_code == 201, sent.text
        bob_before = http.get(f"/api/v1/users/{bob.username}").json()
    assert bob_before["follower_count"] == 1
    # What the search below must find gone, it finds now.
    assert {
        "auth.users.id",
        "auth.follows.follower_id",
        "posts.posts.author_id",
        "posts.likes.user_id",
        "messages.messages.sender_id",
        "media.media.owner_id",
    } <= set(_traces(stack, alice))
    assert any(key.split("/")[0] in media_dirs for key in bucket_keys(stack))

    ws_url = stack.gateway_url.replace("http://", "ws://") + "/ws"
    with connect(ws_url, additional_headers=alice.auth, open_timeout=10) as ws:
        wrong = _delete(stack, alice, "not my password")
        assert (wrong.status_code, wrong.json()["code"]) == (403, "wrong_password")
        with client(stack.gateway_url) as http:
            anonymous = http.request(
                "DELETE", "/api/v1/users/profile", json={"password": alice.password}
            )
        assert anonymous.status_code == 401
        assert _delete(stack, alice, alice.password).status_code == 204
        assert close_of(ws) == (1008, "the session has ended")

    with client(stack.gateway_url) as http:
        assert http.get("/api/v1/users/profile", headers=alice.auth).status_code == 401
        login = http.post(
            "/api/v1/users/login", json={"email": alice.email, "password": alice.password}
        )
        assert login.status_code == 401
        refresh = http.post(
            "/api/v1/users/token/refresh", json={"refresh_token": alice.refresh_token}
        )
        assert refresh.status_code == 401
        assert http.get(f"/api/v1/users/{alice.username}").status_code == 404
        assert http.get(f"/api/v1/posts/{alices_post['id']}").status_code == 404

    def gone() -> bool:
        return not _traces(stack, alice) and not any(
            key.split("/")[0] in media_dirs for key in bucket_keys(stack)
        )

    wait_until(gone, timeout=30, what="nothing of the account in any schema or the bucket")

    with client(stack.gateway_url) as http:
        bob_after = http.get(f"/api/v1/users/{bob.username}").json()
        bobs_post_after = http.get(f"/api/v1/posts/{bobs_post['id']}").json()
        messages = http.get(f"/api/v1/posts/{bobs_post['id']}/messages").json()["items"]
    assert (bob_after["follower_count"], bob_after["following_count"]) == (0, 0)
    assert (bobs_post_after["like_count"], bobs_post_after["message_count"]) == (0, 0)
    assert messages == []

    # The username stays retired; the address is free again.
    with client(stack.gateway_url) as http:
        again = http.post(
            "/api/v1/users/register",
            json={"username": alice.username, "email": "x" + alice.email, "password": "p" * 12},
        )
        address = http.post(
            "/api/v1/users/register",
            json={
                "username": f"u_{uuid.uuid4().hex[:12]}",
                "email": alice.email,
                "password": "p" * 12,
            },
        )
    assert (again.status_code, again.json()["code"]) == (409, "username_taken")
    assert address.status_code == 201

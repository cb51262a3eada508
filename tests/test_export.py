"""Exporting one's data: one JSON document, in the shape the OpenAPI document
gives, holding everything every service keeps of the account and nothing of
anyone else's."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
import schemathesis
from social.userdata.v1 import userdata_pb2, userdata_pb2_grpc
from social_common.fleet import roster
from social_stack.gateway import openapi_document
from social_stack.local import Endpoints
from social_stack.testing import (
    Account,
    client,
    create_account,
    create_post,
    upload_image,
    wait_until,
)

EXPORT = "/api/v1/users/profile/export"


def _export(stack: Endpoints, account: Account) -> dict[str, Any]:
    with client(stack.gateway_url) as http:
        response = http.get(EXPORT, headers=account.auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith(f'attachment; filename="{account.username}-')
    operation = schemathesis.openapi.from_dict(openapi_document())[EXPORT]["GET"]
    operation.validate_response(response)
    archive: dict[str, Any] = json.loads(response.content)
    return archive


def _ids(items: list[dict[str, Any]], key: str = "id") -> list[str]:
    return [item[key] for item in items]


def test_the_export_holds_everything_of_the_account_and_nothing_of_others(
    stack: Endpoints,
) -> None:
    alice, bob = create_account(stack.gateway_url), create_account(stack.gateway_url)
    first = create_post(stack.gateway_url, alice, "first")
    second = create_post(stack.gateway_url, alice, "second")
    bobs = create_post(stack.gateway_url, bob, "bob's")
    unattached = upload_image(stack.gateway_url, alice)
    sent = []
    with client(stack.gateway_url) as http:
        for path, who in (
            (f"/api/v1/users/{bob.username}/follow", alice),
            (f"/api/v1/users/{alice.username}/follow", bob),
            (f"/api/v1/posts/{bobs['id']}/like", alice),
            (f"/api/v1/posts/{first['id']}/like", bob),
        ):
            assert http.post(path, headers=who.auth).status_code in (200, 201, 204), path
        for post, who, text in (
            (bobs, alice, "on bob's"),
            (first, bob, "bob on alice's"),
            (first, alice, "on my own"),
        ):
            reply = http.post(
                f"/api/v1/posts/{post['id']}/messages", headers=who.auth, json={"message": text}
            )
            assert reply.status_code == 201, reply.text
            if who is alice:
                sent.append(reply.json())

        # Posts counts a message when it hears of it (an event): poll the
        # post, not the export, which is limited to 5 an hour.
        def counted() -> bool:
            count: int = http.get(f"/api/v1/posts/{first['id']}").json()["message_count"]
            return count == 2

        wait_until(counted, what="the messages on the first post counted")

    archive = _export(stack, alice)

    assert archive["account"]["id"] == alice.id
    assert archive["account"]["email"] == alice.email
    assert _ids(archive["following"], "username") == [bob.username]
    assert _ids(archive["followers"], "username") == [bob.username]
    assert _ids(archive["posts"]) == [first["id"], second["id"]]
    assert [p["caption"] for p in archive["posts"]] == ["first", "second"]
    assert archive["posts"][0]["like_count"] == 1
    assert archive["posts"][0]["message_count"] == 2
    assert _ids(archive["likes"], "post_id") == [bobs["id"]]
    assert [(m["id"], m["post_id"], m["message"]) for m in archive["messages"]] == [
        (m["id"], m["post_id"], m["message"]) for m in sent
    ]
    attached = {first["media"][0]["id"]: first["id"], second["media"][0]["id"]: second["id"]}
    assert {m["id"]: m["post_id"] for m in archive["media"]} == {
        **attached,
        unattached["id"]: None,
    }
    # The URLs in it are the images themselves.
    with client(stack.gateway_url) as http:
        for media in archive["media"]:
            for url in {media["url"], *(v["url"] for v in media["variants"])}:
                image = http.get(url)
                assert image.status_code == 200, url
                assert image.headers["content-type"].startswith("image/"), url

    # A new account's archive has every list, empty.
    carol = create_account(stack.gateway_url)
    empty = _export(stack, carol)
    lists = ("following", "followers", "posts", "likes", "messages", "media")
    assert {k: v for k, v in empty.items() if isinstance(v, list)} == {k: [] for k in lists}


def test_an_export_needs_a_token_and_is_rate_limited_per_account(stack: Endpoints) -> None:
    alice = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        assert http.get(EXPORT).status_code == 401
        statuses = [http.get(EXPORT, headers=alice.auth).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]
        refused = http.get(EXPORT, headers=alice.auth)
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) > 0


@pytest.mark.parametrize("keeper", roster().user_data_keepers)
def test_every_keeper_serves_its_part_and_refuses_what_it_did_not_issue(
    stack: Endpoints, keeper: str
) -> None:
    account = create_account(stack.gateway_url)
    with grpc.insecure_channel(stack.services_grpc[keeper]) as channel:
        stub = userdata_pb2_grpc.UserDataServiceStub(channel)
        first = stub.ExportUserData(
            userdata_pb2.ExportUserDataRequest(user_id=account.id), timeout=10
        )
        assert list(first.sections)  # a new account: its sections named, empty
        assert (list(first.items), first.next_page_token) == ([], "")
        for bad in (
            userdata_pb2.ExportUserDataRequest(user_id="not an id"),
            userdata_pb2.ExportUserDataRequest(user_id=account.id, page_token="not ours"),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ExportUserData(bad, timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_paging_one_item_at_a_time_gives_what_one_page_does(stack: Endpoints) -> None:
    """Every keeper's queries read past a key on every page after the first:
    pages of one item each, token after token, hold what one page holds."""
    alice, bob = create_account(stack.gateway_url), create_account(stack.gateway_url)
    bobs = [create_post(stack.gateway_url, bob, f"bob's {i}") for i in range(2)]
    for i in range(2):
        create_post(stack.gateway_url, alice, f"alice's {i}")
    with client(stack.gateway_url) as http:
        for post in bobs:
            liked = http.post(f"/api/v1/posts/{post['id']}/like", headers=alice.auth)
            assert liked.status_code == 200, liked.text
            sent = http.post(
                f"/api/v1/posts/{post['id']}/messages", headers=alice.auth, json={"message": "hi"}
            )
            assert sent.status_code == 201, sent.text
    for keeper in roster().user_data_keepers:
        with grpc.insecure_channel(stack.services_grpc[keeper]) as channel:
            stub = userdata_pb2_grpc.UserDataServiceStub(channel)
            whole = stub.ExportUserData(
                userdata_pb2.ExportUserDataRequest(user_id=alice.id, page_size=1000), timeout=10
            )
            assert whole.next_page_token == ""
            paged: list[tuple[str, bytes]] = []
            token = ""
            while True:
                page = stub.ExportUserData(
                    userdata_pb2.ExportUserDataRequest(
                        user_id=alice.id, page_size=1, page_token=token
                    ),
                    timeout=10,
                )
                paged += [(item.section, item.json) for item in page.items]
                token = page.next_page_token
                if not token:
                    break
        # Two of each of the keeper's sections: posts, likes, messages, media.
        counts = {name: sum(s == name for s, _ in paged) for name in whole.sections}
        assert counts == dict.fromkeys(whole.sections, 2), keeper
        assert paged == [(item.section, item.json) for item in whole.items], keeper

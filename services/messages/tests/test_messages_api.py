"""Messages on posts through the gateway, against the real stack."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
from social.messages.v1 import messages_pb2, messages_pb2_grpc
from social.messages.v1.events_pb2 import MessageCreated, MessageDeleted
from social_common.ids import uuid7
from social_stack.local import Endpoints
from social_stack.testing import (
    Account,
    client,
    create_account,
    create_post,
    published_events,
    wait_until,
)


def _send(
    stack: Endpoints, account: Account, post_id: str, body: Any, **headers: str
) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.post(
            f"/api/v1/posts/{post_id}/messages",
            headers={**account.auth, **headers},
            json=body,
        )


def _list(stack: Endpoints, post_id: str, **params: Any) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.get(f"/api/v1/posts/{post_id}/messages", params=params)


def _delete(stack: Endpoints, account: Account, post_id: str, message_id: str) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.delete(f"/api/v1/posts/{post_id}/messages/{message_id}", headers=account.auth)


def _texts(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [m["message"] for m in response.json()["items"]]


def _post_count(stack: Endpoints, post_id: str) -> int:
    with client(stack.gateway_url) as http:
        count: int = http.get(f"/api/v1/posts/{post_id}").json()["message_count"]
    return count


def test_a_message_as_clients_see_it(stack: Endpoints, account: Account) -> None:
    post = create_post(stack.gateway_url, account)
    sent = _send(stack, account, post["id"], {"message": "  hello there \n"})
    assert sent.status_code == 201, sent.text
    assert sent.headers["x-ratelimit-limit"] == "60"
    message = sent.json()
    assert message["message"] == "hello there"
    assert message["post_id"] == post["id"]
    assert message["author"] == {
        "id": account.id,
        "username": account.username,
        "display_name": "",
    }
    listed = _list(stack, post["id"])
    assert listed.json()["items"] == [message]
    with client(stack.gateway_url) as http:
        again = http.get(
            f"/api/v1/posts/{post['id']}/messages",
            headers={"If-None-Match": listed.headers["etag"]},
        )
    assert again.status_code == 304
    # The posts service counts it, from the message.created event.
    wait_until(lambda: _post_count(stack, post["id"]) == 1, what="message_count")


@pytest.mark.parametrize(
    "body",
    [{"message": ""}, {"message": "   "}, {"message": "x" * 2001}, {"text": "hi"}, {"message": 3}],
)
def test_invalid_messages_are_refused(stack: Endpoints, account: Account, body: Any) -> None:
    post = create_post(stack.gateway_url, account)
    response = _send(stack, account, post["id"], body)
    assert response.status_code == 422, response.text


def test_messages_need_a_post_and_a_token(stack: Endpoints, account: Account) -> None:
    for post_id in (str(uuid7()), "nope"):
        assert _send(stack, account, post_id, {"message": "hi"}).status_code == 404
        assert _list(stack, post_id).status_code == 404
    post = create_post(stack.gateway_url, account)
    with client(stack.gateway_url) as http:
        anonymous = http.post(f"/api/v1/posts/{post['id']}/messages", json={"message": "hi"})
    assert anonymous.status_code == 401


def test_pages_oldest_first_or_newest_first(stack: Endpoints, account: Account) -> None:
    post = create_post(stack.gateway_url, account)
    others = [create_account(stack.gateway_url) for _ in range(2)]
    texts = [f"m{i}" for i in range(7)]
    for i, text in enumerate(texts):
        assert (
            _send(stack, [account, *others][i % 3], post["id"], {"message": text}).status_code
            == 201
        )

    def all_pages(**params: Any) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            page = _list(
                stack, post["id"], limit=3, **({"cursor": cursor} if cursor else {}), **params
            )
            seen += _texts(page)
            cursor = page.json()["next_cursor"]
            if cursor is None:
                return seen

    assert all_pages() == texts
    assert all_pages(order="desc") == texts[::-1]
    assert _list(stack, post["id"], order="sideways").status_code == 422
    assert _list(stack, post["id"], cursor="garbage").status_code == 422


def test_the_sender_or_the_posts_author_deletes_no_one_else(
    stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    sender, stranger = create_account(stack.gateway_url), create_account(stack.gateway_url)
    first = _send(stack, sender, post["id"], {"message": "one"}).json()
    second = _send(stack, sender, post["id"], {"message": "two"}).json()
    wait_until(lambda: _post_count(stack, post["id"]) == 2, what="two messages counted")

    refused = _delete(stack, stranger, post["id"], first["id"])
    unknown = _delete(stack, stranger, post["id"], str(uuid7()))
    assert (refused.status_code, refused.json()["code"]) == (404, unknown.json()["code"])
    # A message id under another post is no message of this one.
    other_post = create_post(stack.gateway_url, sender)
    assert _delete(stack, sender, other_post["id"], first["id"]).status_code == 404

    assert _delete(stack, sender, post["id"], first["id"]).status_code == 204
    assert _delete(stack, account, post["id"], second["id"]).status_code == 204  # moderation
    assert _texts(_list(stack, post["id"])) == []
    assert _delete(stack, sender, post["id"], first["id"]).status_code == 404
    wait_until(lambda: _post_count(stack, post["id"]) == 0, what="both uncounted")


def test_sixty_messages_a_minute(stack: Endpoints, account: Account) -> None:
    post = create_post(stack.gateway_url, account)
    responses = [_send(stack, account, post["id"], {"message": str(i)}) for i in range(70)]
    statuses = [r.status_code for r in responses]
    # A burst of 60, then one a second (sending 70 takes about one).
    assert statuses[:60] == [201] * 60
    assert statuses.count(429) >= 5
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1


def test_idempotency_key_sends_once(stack: Endpoints, account: Account) -> None:
    post = create_post(stack.gateway_url, account)
    barrier = threading.Barrier(3)

    def send(_: int) -> httpx.Response:
        barrier.wait()
        return _send(stack, account, post["id"], {"message": "once"}, **{"Idempotency-Key": "m1"})

    with ThreadPoolExecutor(3) as pool:
        racing = list(pool.map(send, range(3)))
    assert set(r.status_code for r in racing) <= {201, 409}
    retry = _send(stack, account, post["id"], {"message": "once"}, **{"Idempotency-Key": "m1"})
    assert retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert _texts(_list(stack, post["id"])) == ["once"]
    other = _send(stack, account, post["id"], {"message": "twice"}, **{"Idempotency-Key": "m1"})
    assert other.status_code == 422


def test_events_in_the_transaction_and_a_deleted_post_takes_its_messages(
    stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    message = _send(stack, account, post["id"], {"message": "hi"}).json()
    assert _delete(stack, account, post["id"], message["id"]).status_code == 204
    kept = _send(stack, account, post["id"], {"message": "kept"}).json()

    wait_until(
        lambda: len(published_events(stack.redis_url, "message.created", post["id"])) == 2,
        what="two message.created",
    )
    wait_until(
        lambda: len(published_events(stack.redis_url, "message.deleted", post["id"])) == 1,
        what="one message.deleted",
    )
    created = [
        MessageCreated.FromString(e.payload)
        for e in published_events(stack.redis_url, "message.created", post["id"])
    ]
    assert {c.message_id for c in created} == {message["id"], kept["id"]}
    assert {c.text for c in created} == {"hi", "kept"}
    [deleted] = [
        MessageDeleted.FromString(e.payload)
        for e in published_events(stack.redis_url, "message.deleted", post["id"])
    ]
    assert (deleted.message_id, deleted.sender_id) == (message["id"], account.id)

    with client(stack.gateway_url) as http:
        assert http.delete(f"/api/v1/posts/{post['id']}", headers=account.auth).status_code == 204
    with grpc.insecure_channel(stack.services_grpc["messages"]) as channel:
        stub = messages_pb2_grpc.MessagesServiceStub(channel)

        def left() -> int:
            reply = stub.CountMessages(
                messages_pb2.CountMessagesRequest(post_ids=[post["id"]]), timeout=5
            )
            return reply.counts[post["id"]]

        wait_until(lambda: left() == 0, what="the deleted post's messages gone")


def test_grpc_pages_a_posts_messages(stack: Endpoints, account: Account) -> None:
    post = create_post(stack.gateway_url, account)
    for text in ("a", "b", "c"):
        _send(stack, account, post["id"], {"message": text})
    with grpc.insecure_channel(stack.services_grpc["messages"]) as channel:
        stub = messages_pb2_grpc.MessagesServiceStub(channel)
        first = stub.GetMessages(
            messages_pb2.GetMessagesRequest(post_id=post["id"], page_size=2), timeout=5
        )
        rest = stub.GetMessages(
            messages_pb2.GetMessagesRequest(
                post_id=post["id"], page_size=2, page_token=first.next_page_token
            ),
            timeout=5,
        )
        counts = stub.CountMessages(
            messages_pb2.CountMessagesRequest(post_ids=[post["id"], str(uuid7()), "x"]), timeout=5
        )
    assert [m.text for m in first.messages] + [m.text for m in rest.messages] == ["a", "b", "c"]
    assert rest.next_page_token == ""
    assert dict(counts.counts) == {
        post["id"]: 3,
        **{k: 0 for k in counts.counts if k != post["id"]},
    }
    assert len(counts.counts) == 2

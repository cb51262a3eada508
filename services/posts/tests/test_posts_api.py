"""Posts, likes and feeds through the gateway, against the real stack."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import pytest
import redis
from posts.likes import LikedSets, liked_key
from posts.timelines import CELEBRITIES, following_key, timeline_key
from social.events.v1.events_pb2 import Envelope
from social.messages.v1.events_pb2 import MessageCreated, MessageDeleted
from social.posts.v1 import posts_pb2, posts_pb2_grpc
from social.posts.v1.events_pb2 import PostCreated, PostDeleted, PostLiked
from social_common.events import make_envelope, streams_of
from social_common.ids import uuid7
from social_common.redis import create_redis, create_sync_redis
from social_stack.local import Endpoints
from social_stack.testing import (
    Account,
    answers,
    client,
    create_account,
    create_post,
    event_handled,
    publish,
    published_events,
    upload_image,
    wait_until,
)


def _get(
    stack: Endpoints, path: str, account: Account | None = None, **params: Any
) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.get(path, headers=account.auth if account else {}, params=params)


def _post(
    stack: Endpoints, account: Account, body: dict[str, Any], **headers: str
) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.post("/api/v1/posts", headers={**account.auth, **headers}, json=body)


def _like(stack: Endpoints, account: Account, post_id: str, *, on: bool = True) -> httpx.Response:
    with client(stack.gateway_url) as http:
        path = f"/api/v1/posts/{post_id}/like"
        return (http.post if on else http.delete)(path, headers=account.auth)


def _delete(stack: Endpoints, account: Account, post_id: str) -> httpx.Response:
    with client(stack.gateway_url) as http:
        return http.delete(f"/api/v1/posts/{post_id}", headers=account.auth)


def _follow(stack: Endpoints, follower: Account, followee: Account, *, on: bool = True) -> None:
    with client(stack.gateway_url) as http:
        path = f"/api/v1/users/{followee.username}/follow"
        response = (http.post if on else http.delete)(path, headers=follower.auth)
    assert response.status_code in (200, 201, 204), response.text


def _ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["items"]]


def _all_pages(
    stack: Endpoints, path: str, account: Account | None = None, limit: int = 5
) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = _get(stack, path, account, **params)
        seen += _ids(page)
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return seen


def _feed_ids(stack: Endpoints, account: Account) -> list[str]:
    return _ids(_get(stack, "/api/v1/feed", account, limit=40))


# -- creating and reading -----------------------------------------------------


def test_a_post_as_clients_see_it(stack: Endpoints, account: Account) -> None:
    media = [upload_image(stack.gateway_url, account) for _ in range(2)]
    created = _post(
        stack, account, {"caption": "  two pictures\n", "media_ids": [m["id"] for m in media]}
    )
    assert created.status_code == 201, created.text
    post = created.json()
    assert created.headers["location"] == f"/api/v1/posts/{post['id']}"
    assert created.headers["x-ratelimit-limit"] == "10"
    assert post["author"] == {
        "id": account.id,
        "username": account.username,
        "display_name": "",
    }
    assert post["caption"] == "two pictures"
    assert [m["id"] for m in post["media"]] == [m["id"] for m in media]
    assert post["media"][0]["url"] == media[0]["url"]
    assert (post["like_count"], post["message_count"], post["liked_by_me"]) == (0, 0, False)

    anonymous = _get(stack, f"/api/v1/posts/{post['id']}")
    assert anonymous.status_code == 200
    assert "liked_by_me" not in anonymous.json()
    assert {k: v for k, v in post.items() if k != "liked_by_me"} == anonymous.json()
    # Revalidation: the same ETag answers 304 with no body.
    with client(stack.gateway_url) as http:
        again = http.get(
            f"/api/v1/posts/{post['id']}", headers={"If-None-Match": anonymous.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.content == b""


def test_the_seeds_image_url_form_takes_only_the_authors_own_media(
    stack: Endpoints, account: Account
) -> None:
    mine = upload_image(stack.gateway_url, account)
    other = create_account(stack.gateway_url)
    theirs = upload_image(stack.gateway_url, other)
    for url in (theirs["url"], "https://example.com/cat.jpg", mine["url"] + "x"):
        refused = _post(stack, account, {"image_url": url, "caption": "x"})
        assert refused.status_code == 422, url
    created = _post(stack, account, {"image_url": mine["url"], "caption": "seed form"})
    assert created.status_code == 201, created.text
    assert [m["id"] for m in created.json()["media"]] == [mine["id"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"caption": "no media"}, "media_ids"),
        ({"caption": "x", "media_ids": []}, "media_ids"),
        ({"caption": "x", "media_ids": ["not-a-uuid"]}, "media_ids"),
        ({"caption": "x", "media_ids": [str(uuid7()) for _ in range(5)]}, "media_ids"),
        ({"caption": "c" * 2201, "media_ids": [str(uuid7())]}, "caption"),
        ({"caption": "x", "media_ids": [str(uuid7())], "author_id": "me"}, "author_id"),
    ],
)
def test_invalid_posts_are_refused_field_by_field(
    stack: Endpoints, account: Account, body: dict[str, Any], field: str
) -> None:
    response = _post(stack, account, body)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}


def test_media_must_be_the_authors_and_unused(stack: Endpoints, account: Account) -> None:
    other = create_account(stack.gateway_url)
    theirs = upload_image(stack.gateway_url, other)["id"]
    mine = upload_image(stack.gateway_url, account)["id"]
    assert _post(stack, account, {"caption": "x", "media_ids": [mine, theirs]}).status_code == 422
    assert _post(stack, account, {"caption": "x", "media_ids": [mine]}).status_code == 201
    # Attached to the first post, it cannot illustrate a second.
    assert _post(stack, account, {"caption": "x", "media_ids": [mine]}).status_code == 422


def test_writing_needs_a_token(stack: Endpoints, account: Account) -> None:
    post = create_post(stack.gateway_url, account)
    with client(stack.gateway_url) as http:
        assert http.post("/api/v1/posts", json={"caption": "x"}).status_code == 401
        assert http.post(f"/api/v1/posts/{post['id']}/like").status_code == 401
        assert http.delete(f"/api/v1/posts/{post['id']}").status_code == 401
        assert http.get("/api/v1/feed").status_code == 401


def test_unknown_and_malformed_ids_are_404(stack: Endpoints, account: Account) -> None:
    for post_id in (str(uuid7()), "nope"):
        assert _get(stack, f"/api/v1/posts/{post_id}").status_code == 404
        assert _like(stack, account, post_id).status_code == 404
        assert _delete(stack, account, post_id).status_code == 404
    assert _get(stack, "/api/v1/users/nobody_here_at_all/posts").status_code == 404


# -- deleting -------------------------------------------------------------------


def test_only_the_author_deletes_and_others_see_no_difference(
    stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    other = create_account(stack.gateway_url)
    refused = _delete(stack, other, post["id"])
    unknown = _delete(stack, other, str(uuid7()))
    assert (refused.status_code, refused.json()["code"]) == (404, unknown.json()["code"])
    assert _get(stack, f"/api/v1/posts/{post['id']}").status_code == 200

    assert _delete(stack, account, post["id"]).status_code == 204
    assert _get(stack, f"/api/v1/posts/{post['id']}").status_code == 404
    assert post["id"] not in _ids(_get(stack, f"/api/v1/users/{account.username}/posts"))
    assert post["id"] not in _feed_ids(stack, account)
    assert _like(stack, other, post["id"]).status_code == 404
    assert _delete(stack, account, post["id"]).status_code == 404
    # The media service hears of it and deletes the post's images.
    wait_until(answers(post["media"][0]["url"], 404), what="the post's media deleted")


# -- likes ------------------------------------------------------------------------


def test_likes_are_idempotent_and_never_stale_after_the_write(
    stack: Endpoints, account: Account
) -> None:
    post = create_post(stack.gateway_url, account)
    path = f"/api/v1/posts/{post['id']}"
    fans = [create_account(stack.gateway_url) for _ in range(2)]
    # Cached renderings exist before the likes: they must not be served after.
    assert _get(stack, path).json()["like_count"] == 0
    assert _get(stack, "/api/v1/posts").status_code == 200
    for fan in fans:
        for _ in range(2):  # the second like changes nothing
            liked = _like(stack, fan, post["id"])
            assert liked.status_code == 200, liked.text
            assert liked.json()["liked_by_me"] is True
    assert liked.json()["like_count"] == 2
    assert _get(stack, path).json()["like_count"] == 2
    assert _get(stack, path, fans[0]).json()["liked_by_me"] is True
    assert _get(stack, path, account).json()["liked_by_me"] is False
    listed = {p["id"]: p for p in _get(stack, "/api/v1/posts", limit=40).json()["items"]}
    assert listed[post["id"]]["like_count"] == 2

    for _ in range(2):
        unliked = _like(stack, fans[0], post["id"], on=False)
        assert unliked.status_code == 200
        assert (unliked.json()["like_count"], unliked.json()["liked_by_me"]) == (1, False)
    assert _get(stack, path).json()["like_count"] == 1
    # The reader's cached likes follow: a read after the unlike says so.
    assert _get(stack, path, fans[0]).json()["liked_by_me"] is False
    assert _get(stack, path, fans[1]).json()["liked_by_me"] is True


def test_concurrent_likes_all_count(stack: Endpoints, account: Account) -> None:
    post = create_post(stack.gateway_url, account)
    fans = [create_account(stack.gateway_url) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda fan: _like(stack, fan, post["id"]).status_code, fans))
    assert statuses == [200] * 8
    assert _get(stack, f"/api/v1/posts/{post['id']}").json()["like_count"] == 8


# -- pagination -------------------------------------------------------------------


def test_pages_stay_stable_while_posts_arrive(stack: Endpoints) -> None:
    authors = [create_account(stack.gateway_url) for _ in range(3)]
    before = [create_post(stack.gateway_url, a, f"old {i}") for i in range(4) for a in authors]
    existing = {p["id"] for p in before}
    stop = threading.Event()
    arrived: list[str] = []

    def keep_posting() -> None:
        for i in range(6):
            if stop.is_set():
                return
            arrived.append(create_post(stack.gateway_url, authors[i % 3], "new")["id"])

    writer = threading.Thread(target=keep_posting)
    writer.start()
    try:
        seen = _all_pages(stack, "/api/v1/posts", limit=3)
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen)), "a post appeared twice"
    assert existing <= set(seen), "a post that existed before paging was skipped"
    assert seen == sorted(seen, reverse=True), "not newest first"

    mine = _all_pages(stack, f"/api/v1/users/{authors[0].username}/posts", limit=2)
    assert mine == sorted(
        {p["id"] for p in before if p["author"]["id"] == authors[0].id}
        | {
            i
            for i in arrived
            if _get(stack, f"/api/v1/posts/{i}").json()["author"]["id"] == authors[0].id
        },
        reverse=True,
    )


def test_limits_are_clamped_and_bad_cursors_refused(stack: Endpoints) -> None:
    assert _get(stack, "/api/v1/posts", limit=1000).status_code == 200
    assert len(_get(stack, "/api/v1/posts", limit=1000).json()["items"]) <= 40
    assert _get(stack, "/api/v1/posts", limit=0).status_code == 422
    assert _get(stack, "/api/v1/posts", cursor="garbage").status_code == 422
    page = _get(stack, "/api/v1/posts", limit=1)
    if page.json()["next_cursor"]:
        assert 'rel="next"' in page.headers["link"]


# -- home timelines -----------------------------------------------------------------


def test_fan_out_unfollow_delete_and_rebuild(stack: Endpoints, events: redis.Redis) -> None:
    reader, author = create_account(stack.gateway_url), create_account(stack.gateway_url)
    own = create_post(stack.gateway_url, reader, "mine")
    assert _feed_ids(stack, reader) == [own["id"]]  # builds the reader's timeline
    _follow(stack, reader, author)
    earlier = create_post(stack.gateway_url, author, "before the follow was known")
    wait_until(lambda: earlier["id"] in _feed_ids(stack, reader), what="the followee's post")
    later = create_post(stack.gateway_url, author, "fanned out")
    wait_until(lambda: later["id"] in _feed_ids(stack, reader), what="fan-out")
    assert later["id"] in events.zrange(timeline_key(reader.id), 0, -1)
    assert _feed_ids(stack, reader) == [later["id"], earlier["id"], own["id"]]

    # A lost timeline is rebuilt from Postgres, the same.
    events.delete(timeline_key(reader.id), following_key(reader.id))
    assert _feed_ids(stack, reader) == [later["id"], earlier["id"], own["id"]]

    assert _delete(stack, author, later["id"]).status_code == 204
    wait_until(
        lambda: later["id"] not in events.zrange(timeline_key(reader.id), 0, -1),
        what="the deleted post leaving the timeline",
    )
    assert _feed_ids(stack, reader) == [earlier["id"], own["id"]]

    _follow(stack, reader, author, on=False)
    wait_until(lambda: _feed_ids(stack, reader) == [own["id"]], what="unfollow")


def test_authors_with_many_followers_are_merged_at_read_time(
    stack: Endpoints, events: redis.Redis
) -> None:
    # The test stack makes three followers "very many".
    star = create_account(stack.gateway_url)
    fans = [create_account(stack.gateway_url) for _ in range(3)]
    for fan in fans:
        create_post(stack.gateway_url, fan, "fan")
        _feed_ids(stack, fan)
        _follow(stack, fan, star)
    post = create_post(stack.gateway_url, star, "to millions")
    wait_until(
        lambda: bool(events.sismember(CELEBRITIES, star.id)),
        what="the star being noticed",
    )
    for fan in fans:
        assert post["id"] not in events.zrange(timeline_key(fan.id), 0, -1)
    # Each posts process reads who the stars are at most a second late.
    wait_until(
        lambda: all(post["id"] in _feed_ids(stack, fan) for fan in fans),
        what="the star's post merged into each fan's feed",
    )


def test_home_timeline_pages_past_what_redis_keeps(stack: Endpoints) -> None:
    # The test stack keeps 40 ids per timeline; 45 posts from three authors.
    reader = create_account(stack.gateway_url)
    authors = [create_account(stack.gateway_url) for _ in range(3)]
    _feed_ids(stack, reader)
    for author in authors:
        _follow(stack, reader, author)
    posted = [create_post(stack.gateway_url, a, "p")["id"] for _ in range(5) for a in authors]
    # (a burst of ten per author: the create limit's whole budget)
    posted += [create_post(stack.gateway_url, a, "q")["id"] for _ in range(5) for a in authors]
    posted += [create_post(stack.gateway_url, reader, "r")["id"] for _ in range(10)]
    expected = sorted(posted, reverse=True)
    wait_until(
        lambda: _feed_ids(stack, reader)[:1] == expected[:1], what="the newest post arriving"
    )
    assert _all_pages(stack, "/api/v1/feed", reader, limit=7) == expected
    # A full timeline that loses a post still knows older ones exist.
    newest = expected[0]
    assert _delete(stack, reader, newest).status_code == 204
    assert _all_pages(stack, "/api/v1/feed", reader, limit=7) == expected[1:]


# -- limits and idempotency -------------------------------------------------------------


def test_the_create_limit_is_ten_a_minute(stack: Endpoints, account: Account) -> None:
    media = [upload_image(stack.gateway_url, account)["id"] for _ in range(11)]
    statuses = [
        _post(stack, account, {"caption": str(i), "media_ids": [m]}) for i, m in enumerate(media)
    ]
    assert [r.status_code for r in statuses] == [201] * 10 + [429]
    assert int(statuses[-1].headers["retry-after"]) >= 1
    assert statuses[-1].headers["x-ratelimit-remaining"] == "0"


def test_idempotency_key_replays_refuses_changes_and_collisions(
    stack: Endpoints, account: Account
) -> None:
    media = upload_image(stack.gateway_url, account)["id"]
    body = {"caption": "once", "media_ids": [media]}
    first = _post(stack, account, body, **{"Idempotency-Key": "k-1"})
    again = _post(stack, account, body, **{"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    changed = _post(stack, account, {**body, "caption": "twice"}, **{"Idempotency-Key": "k-1"})
    assert changed.status_code == 422
    mine = _ids(_get(stack, f"/api/v1/users/{account.username}/posts"))
    assert mine == [first.json()["id"]]

    # Two at once with one key: one post, the other told to retry (or replayed).
    second_media = upload_image(stack.gateway_url, account)["id"]
    racing = {"caption": "race", "media_ids": [second_media]}
    barrier = threading.Barrier(4)

    def send(_: int) -> httpx.Response:
        barrier.wait()
        return _post(stack, account, racing, **{"Idempotency-Key": "k-2"})

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(send, range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(201) >= 1
    assert set(statuses) <= {201, 409}
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
    assert len(_ids(_get(stack, f"/api/v1/users/{account.username}/posts"))) == 2


# -- events from other services, and to them ---------------------------------------------


def test_message_events_move_the_count_once_each(
    stack: Endpoints, account: Account, events: redis.Redis
) -> None:
    post = create_post(stack.gateway_url, account)
    path = f"/api/v1/posts/{post['id']}"
    assert _get(stack, path).json()["message_count"] == 0  # cached before the events
    message_id = str(uuid7())
    created = make_envelope(
        "messages",
        "message.created",
        message_id,
        MessageCreated(message_id=message_id, post_id=post["id"], sender_id=account.id, text="hi"),
    )
    for _ in range(2):  # a redelivery counts nothing
        publish(events, created)
    other = make_envelope(
        "messages",
        "message.created",
        "m2",
        MessageCreated(message_id=str(uuid7()), post_id=post["id"], sender_id=account.id),
    )
    publish(events, other)
    wait_until(lambda: _get(stack, path).json()["message_count"] == 2, what="two messages counted")
    deleted = make_envelope(
        "messages",
        "message.deleted",
        message_id,
        MessageDeleted(message_id=message_id, post_id=post["id"], sender_id=account.id),
    )
    publish(events, deleted)
    wait_until(lambda: _get(stack, path).json()["message_count"] == 1, what="one message left")

    # Heard out of order (two streams): a deletion before its creation cancels it.
    late_id = str(uuid7())
    late_deleted = make_envelope(
        "messages",
        "message.deleted",
        late_id,
        MessageDeleted(message_id=late_id, post_id=post["id"], sender_id=account.id),
    )
    late_created = make_envelope(
        "messages",
        "message.created",
        late_id,
        MessageCreated(message_id=late_id, post_id=post["id"], sender_id=account.id),
    )
    last_deleted = publish(events, late_deleted)

    # Nothing stuck: every event was acknowledged.
    wait_until(
        event_handled(events, last_deleted, "posts"),
        what="the deletion handled",
    )
    assert _get(stack, path).json()["message_count"] == 1  # it was never counted
    last_created = publish(events, late_created)
    wait_until(
        event_handled(events, last_created, "posts"),
        what="the creation handled",
    )
    assert _get(stack, path).json()["message_count"] == 1


def test_posts_publish_their_events(
    stack: Endpoints, account: Account, events: redis.Redis
) -> None:
    post = create_post(stack.gateway_url, account)
    fan = create_account(stack.gateway_url)
    _like(stack, fan, post["id"])
    _like(stack, fan, post["id"])  # no second event: nothing changed
    assert _delete(stack, account, post["id"]).status_code == 204
    wait_until(
        lambda: len(published_events(stack.redis_url, "post.deleted", post["id"])) == 1,
        what="post.deleted",
    )
    [created] = published_events(stack.redis_url, "post.created", post["id"])
    assert PostCreated.FromString(created.payload).author_id == account.id
    assert created.producer == "posts"
    [liked] = published_events(stack.redis_url, "post.liked", post["id"])
    assert PostLiked.FromString(liked.payload).user_id == fan.id
    [deleted] = published_events(stack.redis_url, "post.deleted", post["id"])
    assert list(PostDeleted.FromString(deleted.payload).media_ids) == [post["media"][0]["id"]]


def test_grpc_get_posts_answers_for_live_posts_only(stack: Endpoints, account: Account) -> None:
    live = create_post(stack.gateway_url, account)
    gone = create_post(stack.gateway_url, account)
    assert _delete(stack, account, gone["id"]).status_code == 204
    with grpc.insecure_channel(stack.services_grpc["posts"]) as channel:
        stub = posts_pb2_grpc.PostsServiceStub(channel)
        reply = stub.GetPosts(
            posts_pb2.GetPostsRequest(ids=[live["id"], gone["id"], str(uuid.uuid4()), "x"]),
            timeout=5,
        )
    assert [(p.id, p.author_id) for p in reply.posts] == [(live["id"], account.id)]
    assert reply.posts[0].visibility == posts_pb2.VISIBILITY_PUBLIC


def test_a_create_that_loses_its_media_race_rolls_back_and_publishes_nothing(
    stack: Endpoints, account: Account
) -> None:
    media = upload_image(stack.gateway_url, account)["id"]
    body = {"caption": "race", "media_ids": [media]}
    barrier = threading.Barrier(3)

    def send(_: int) -> httpx.Response:
        barrier.wait()
        return _post(stack, account, body)

    with ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(send, range(3)))
    assert sorted(r.status_code for r in responses) == [201, 422, 422]
    [winner] = [r.json()["id"] for r in responses if r.status_code == 201]
    assert _ids(_get(stack, f"/api/v1/users/{account.username}/posts")) == [winner]
    # The losers' transactions (post row and outbox event) were rolled back.
    wait_until(
        lambda: published_events(stack.redis_url, "post.created", winner) != [],
        what="the winner's event",
    )
    with create_sync_redis(stack.redis_url) as raw:
        entries: Any = [e for s in streams_of("post.created") for e in raw.xrange(s)]
    created = [
        PostCreated.FromString(Envelope.FromString(f[b"envelope"]).payload) for _, f in entries
    ]
    assert [c.post_id for c in created if media in c.media_ids] == [winner]


def test_a_liked_set_whose_load_fails_expires(stack: Endpoints, events: redis.Redis) -> None:
    user_id = str(uuid.uuid4())

    async def load_fails() -> None:
        connection = create_redis(stack.redis_url)
        try:

            async def broken(_user_id: str, _limit: int) -> tuple[list[str], bool]:
                raise RuntimeError("PostgreSQL went away")

            with pytest.raises(RuntimeError):
                await LikedSets(connection, ttl_seconds=60).load(user_id, broken)
        finally:
            await connection.aclose()

    asyncio.run(load_fails())
    # The "loading" marker stays no longer than a loaded set would.
    assert 0 < events.ttl(liked_key(user_id)) <= 60

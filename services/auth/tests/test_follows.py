"""The follow graph over REST and the peers' gRPC API, and the events it publishes."""

from __future__ import annotations

import uuid

import grpc
import httpx
import pytest
from social.auth.v1 import auth_pb2, auth_pb2_grpc
from social.auth.v1.events_pb2 import UserFollowed, UserUnfollowed
from social_stack.local import Endpoints
from social_stack.testing import (
    Account,
    client,
    create_account,
    published_events,
    wait_until,
)


def _follow(stack: Endpoints, who: Account, whom: str, *, on: bool = True) -> httpx.Response:
    with client(stack.gateway_url) as http:
        method = http.post if on else http.delete
        return method(f"/api/v1/users/{whom}/follow", headers=who.auth)


def _profile(stack: Endpoints, username: str, viewer: Account | None = None) -> dict[str, object]:
    with client(stack.gateway_url) as http:
        response = http.get(f"/api/v1/users/{username}", headers=viewer.auth if viewer else {})
    assert response.status_code == 200
    result: dict[str, object] = response.json()
    return result


def test_follow_and_unfollow_are_idempotent_and_counted(stack: Endpoints) -> None:
    alice, bob = create_account(stack.gateway_url), create_account(stack.gateway_url)
    assert _follow(stack, alice, bob.username).status_code == 204
    assert _follow(stack, alice, bob.username).status_code == 204
    assert _profile(stack, bob.username)["follower_count"] == 1
    assert _profile(stack, alice.username)["following_count"] == 1
    assert _profile(stack, bob.username, viewer=alice)["followed_by_me"] is True
    assert _profile(stack, alice.username, viewer=bob)["followed_by_me"] is False
    assert _follow(stack, alice, bob.username, on=False).status_code == 204
    assert _follow(stack, alice, bob.username, on=False).status_code == 204
    assert _profile(stack, bob.username)["follower_count"] == 0
    assert _profile(stack, alice.username)["following_count"] == 0


def test_following_oneself_or_nobody_is_refused(stack: Endpoints) -> None:
    alice = create_account(stack.gateway_url)
    selfish = _follow(stack, alice, alice.username)
    assert (selfish.status_code, selfish.json()["code"]) == (422, "cannot_follow_self")
    assert _follow(stack, alice, "nobody_by_this_name").status_code == 404
    with client(stack.gateway_url) as http:
        assert http.post(f"/api/v1/users/{alice.username}/follow").status_code == 401


def _all_pages(stack: Endpoints, path: str, limit: int) -> tuple[list[str], int]:
    names: list[str] = []
    pages = 0
    url: str | None = f"{path}?limit={limit}"
    with client(stack.gateway_url) as http:
        while url:
            response = http.get(url)
            assert response.status_code == 200
            body = response.json()
            names += [item["username"] for item in body["items"]]
            pages += 1
            link = response.headers.get("link")
            assert (link is None) == (body["next_cursor"] is None)
            url = link.split(";")[0].strip("<>").removeprefix(stack.gateway_url) if link else None
    return names, pages


def test_followers_and_following_come_in_stable_cursor_pages(stack: Endpoints) -> None:
    star = create_account(stack.gateway_url)
    fans = [create_account(stack.gateway_url) for _ in range(5)]
    for fan in fans:
        assert _follow(stack, fan, star.username).status_code == 204
    names, pages = _all_pages(stack, f"/api/v1/users/{star.username}/followers", limit=2)
    assert names == [fan.username for fan in reversed(fans)]  # newest first
    assert pages == 3
    following, _ = _all_pages(stack, f"/api/v1/users/{fans[0].username}/following", limit=2)
    assert following == [star.username]


def test_pages_survive_concurrent_follows_without_duplicates(stack: Endpoints) -> None:
    star = create_account(stack.gateway_url)
    early = [create_account(stack.gateway_url) for _ in range(3)]
    for fan in early:
        _follow(stack, fan, star.username)
    with client(stack.gateway_url) as http:
        first = http.get(f"/api/v1/users/{star.username}/followers?limit=2").json()
        # A new follower arrives between pages: it sorts before the cursor.
        _follow(stack, create_account(stack.gateway_url), star.username)
        second = http.get(
            f"/api/v1/users/{star.username}/followers",
            params={"limit": 2, "cursor": first["next_cursor"]},
        ).json()
    seen = [i["username"] for i in first["items"] + second["items"]]
    assert seen == [fan.username for fan in reversed(early)]


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("limit=0", 422),
        ("limit=abc", 422),
        ("limit=1000", 200),
        ("cursor=garbage", 422),
        ("cursor=WyJ4IiwieSJd", 422),
    ],
)
def test_page_parameters_are_checked(stack: Endpoints, query: str, status: int) -> None:
    alice = create_account(stack.gateway_url)
    with client(stack.gateway_url) as http:
        response = http.get(f"/api/v1/users/{alice.username}/followers?{query}")
    assert response.status_code == status


def _stub(stack: Endpoints) -> tuple[grpc.Channel, auth_pb2_grpc.AuthServiceStub]:
    channel = grpc.insecure_channel(stack.services_grpc["auth"])
    return channel, auth_pb2_grpc.AuthServiceStub(channel)


def test_grpc_get_users_hydrates_in_batch(stack: Endpoints) -> None:
    alice, bob = create_account(stack.gateway_url), create_account(stack.gateway_url)
    channel, stub = _stub(stack)
    with channel:
        reply = stub.GetUsers(
            auth_pb2.GetUsersRequest(ids=[alice.id, bob.id, str(uuid.uuid4()), "not-a-uuid"]),
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as too_many:
            stub.GetUsers(auth_pb2.GetUsersRequest(ids=[str(uuid.uuid4())] * 1001), timeout=5)
    assert {(u.id, u.username) for u in reply.users} == {
        (alice.id, alice.username),
        (bob.id, bob.username),
    }
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_get_users_finds_usernames_in_any_case_with_follower_counts(
    stack: Endpoints,
) -> None:
    alice, bob, carol = (create_account(stack.gateway_url) for _ in range(3))
    for fan in (bob, carol):
        assert _follow(stack, fan, alice.username).status_code == 204
    channel, stub = _stub(stack)
    with channel:
        reply = stub.GetUsers(
            auth_pb2.GetUsersRequest(
                ids=[carol.id],
                # Carol by id and by name: she comes once.
                usernames=[alice.username.upper(), bob.username, carol.username, "nobody_here"],
            ),
            timeout=5,
        )
        with pytest.raises(grpc.RpcError) as too_many:
            stub.GetUsers(
                auth_pb2.GetUsersRequest(
                    ids=[str(uuid.uuid4())] * 500, usernames=[bob.username] * 501
                ),
                timeout=5,
            )
    assert sorted((u.id, u.username, u.follower_count) for u in reply.users) == sorted(
        [(alice.id, alice.username, 2), (bob.id, bob.username, 0), (carol.id, carol.username, 0)]
    )
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_followers_and_following_page_through_ids(stack: Endpoints) -> None:
    star = create_account(stack.gateway_url)
    fans = [create_account(stack.gateway_url) for _ in range(3)]
    for fan in fans:
        _follow(stack, fan, star.username)
    channel, stub = _stub(stack)
    ids: list[str] = []
    token = ""
    with channel:
        while True:
            page = stub.GetFollowers(
                auth_pb2.GetFollowersRequest(user_id=star.id, page_size=2, page_token=token),
                timeout=5,
            )
            ids += page.user_ids
            token = page.next_page_token
            if not token:
                break
        following = stub.GetFollowing(auth_pb2.GetFollowingRequest(user_id=fans[0].id), timeout=5)
        with pytest.raises(grpc.RpcError) as bad:
            stub.GetFollowers(
                auth_pb2.GetFollowersRequest(user_id=star.id, page_token="garbage"), timeout=5
            )
    assert sorted(ids) == sorted(fan.id for fan in fans)
    assert list(following.user_ids) == [star.id]
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_jwks_matches_the_published_one(stack: Endpoints) -> None:
    channel, stub = _stub(stack)
    with channel:
        reply = stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
    with client(stack.gateway_url) as http:
        published = http.get("/.well-known/jwks.json").json()
    assert httpx.Response(200, content=reply.jwks_json).json() == published


def test_follow_changes_are_published_once_each(stack: Endpoints) -> None:
    alice, bob = create_account(stack.gateway_url), create_account(stack.gateway_url)

    def arrived(event_type: str, count: int) -> bool:
        return len(published_events(stack.redis_url, event_type, alice.id)) == count

    assert _follow(stack, alice, bob.username).status_code == 204
    wait_until(lambda: arrived("user.followed", 1), what="user.followed published")
    (followed,) = published_events(stack.redis_url, "user.followed", alice.id)
    assert (followed.type, followed.producer) == ("user.followed", "auth")
    assert UserFollowed.FromString(followed.payload) == UserFollowed(
        follower_id=alice.id, followee_id=bob.id
    )

    # The relay publishes in outbox order: once a later change's event is on
    # its stream, an event of a repeated follow (or unfollow) would be too.
    assert _follow(stack, alice, bob.username).status_code == 204
    assert _follow(stack, alice, bob.username, on=False).status_code == 204
    wait_until(lambda: arrived("user.unfollowed", 1), what="user.unfollowed published")
    assert arrived("user.followed", 1)
    (unfollowed,) = published_events(stack.redis_url, "user.unfollowed", alice.id)
    assert UserUnfollowed.FromString(unfollowed.payload) == UserUnfollowed(
        follower_id=alice.id, followee_id=bob.id
    )

    assert _follow(stack, alice, bob.username, on=False).status_code == 204
    assert _follow(stack, alice, bob.username).status_code == 204
    wait_until(lambda: arrived("user.followed", 2), what="the second user.followed published")
    assert arrived("user.unfollowed", 1)

"""Every Lua script's keys in one hash slot, as a Redis Cluster requires.

A script whose keys have a fixed shape (a user's, a channel's) is given
them by key builders whose hash tags put them in one slot: checked here for
many ids. A script over any number of keys (cache entries, rate limits,
timelines) is called once per slot, its keys grouped by ``slot_groups``:
checked here on a cluster's client. The suite run on a real cluster
(`make test-cluster`) is the rest of the proof: a call across slots fails
there. And the event streams: spread over slots, one read per shard.
"""

from __future__ import annotations

import ast
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import redis.asyncio as aioredis
from posts.likes import liked_key
from posts.timelines import following_key, page_keys, timeline_key
from realtime.events import seen_key
from realtime.hub import stream_key
from realtime.presence import presence_key
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from social_common.events import STREAM_SHARDS, stream_for, streams_of
from social_common.redis import slot_groups

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "libs" / "common" / "src", *sorted((ROOT / "services").glob("*/src"))]


def _ids(count: int = 200) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def _channels() -> list[str]:
    return [f"{kind}:{i}" for i in _ids(100) for kind in ("post", "user", "feed")]


# The keys of one call of each script with a fixed shape, for an id.
FIXED: dict[str, Callable[[str], list[str]]] = {
    "_PAGE": page_keys,
    "_FINISH_REBUILD": lambda user: [timeline_key(user), following_key(user)],
    "_CHANGE_IF_EXISTS": lambda user: [liked_key(user)],
    "_FINISH_LOAD": lambda user: [liked_key(user)],
    "_ACQUIRE": lambda user: [presence_key(user)],
    "_RENEW": lambda user: [presence_key(user)],
    # A routing's call: what it remembers, in the slot of its first channel,
    # and the streams of that slot (here, that channel's).
    "_ROUTE": lambda channel: [seen_key(channel, "envelope", 0), stream_key(channel)],
}
# Scripts over any number of keys, each call's keys those of one slot group.
GROUPED = {"_GCRA", "_PUT_IF_NEWER", "_ADD_IF_EXISTS"}


def _registered_scripts() -> set[str]:
    """The name of every script the fleet registers: ``register_script(NAME)``."""
    names: set[str] = set()
    for source in SOURCES:
        for path in source.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "register_script"
                ):
                    (argument,) = node.args
                    assert isinstance(argument, ast.Name), ast.unparse(node)
                    names.add(argument.id)
    return names


def test_every_script_is_checked() -> None:
    assert _registered_scripts() == set(FIXED) | GROUPED


@pytest.mark.parametrize("script", sorted(FIXED))
def test_a_fixed_shape_scripts_keys_share_a_slot(script: str) -> None:
    for key_of in _channels() if script == "_ROUTE" else _ids():
        keys = FIXED[script](key_of)
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys


def test_grouped_keys_share_a_slot_on_a_cluster_and_a_group_on_one_server() -> None:
    # A cluster's client learns the cluster's map on first use: grouping needs none.
    # (As create_redis gives it: typed as the one-server client.)
    cluster = cast("aioredis.Redis", RedisCluster(host="127.0.0.1", port=1))
    keys = [f"cache:posts:{i}" for i in _ids()] + [stream_key(c) for c in _channels()]
    groups = slot_groups(cluster, keys)
    assert sorted(i for group in groups for i in group) == list(range(len(keys)))
    for group in groups:
        assert len({key_slot(keys[i].encode()) for i in group}) == 1
    assert len(groups) > 1
    assert slot_groups(aioredis.Redis(), keys) == [list(range(len(keys)))]


def test_an_event_types_streams_spread_over_slots_a_shard_of_every_type_in_one() -> None:
    types = ["post.created", "message.created", "user.followed"]
    shards = list(zip(*(streams_of(t) for t in types), strict=True))
    assert len(shards) == STREAM_SHARDS
    # One read takes a consumer's types in a shard: their streams share a slot.
    slots = [{key_slot(stream.encode()) for stream in shard} for shard in shards]
    assert all(len(slot) == 1 for slot in slots)
    # The shards fall on every primary of a three-shard cluster (the slots in thirds).
    assert {min(slot) * 3 // 16384 for slot in slots} == {0, 1, 2}
    # Keys spread over every shard.
    assert {stream_for("post.created", i) for i in _ids()} == set(streams_of("post.created"))

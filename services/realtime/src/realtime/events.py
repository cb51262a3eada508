"""From the fleet's events to per-channel streams.

The realtime service consumes the events it delivers (one consumer group:
each event is routed by one process) and appends each to the Redis stream
of every channel it concerns (``rt:post:<id>``, ``rt:user:<id>``, and for a
new post ``rt:feed:<id>`` of each of its author's followers), trimmed
to ``retention`` entries, publishing it on the sharded pub/sub channel of
the same name (SPUBLISH: on a cluster, the stream's shard) in the same Lua
call. A stream entry's id is the event's id on that
channel: monotonic, and what a client sends back as ``since``. A redelivered
event (the consumer is at least once) is recognised by its envelope id and
routed once.

On a Redis Cluster a routing is one call per slot of the channels' streams
(the channel is each stream's hash tag); each call remembers the envelope
on a key of its own slot, so a redelivery skips the calls that were made.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import redis.asyncio as aioredis
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from social.auth.v1 import auth_pb2_grpc
from social.events.v1.events_pb2 import Envelope
from social.messages.v1.events_pb2 import MessageCreated, MessageDeleted
from social.posts.v1.events_pb2 import PostCreated, PostLiked
from social_common.events import Handler
from social_common.models import encode
from social_common.peers import follow_pages
from social_common.redis import run_script, slot_groups
from social_common.tracing import sampled_traceparent

from realtime.hub import stream_key

# How long a routed envelope id is remembered against redelivery.
SEEN_SECONDS = 24 * 3600
# Followers' feeds written per Lua call.
FEED_BATCH = 500

_ROUTE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
for i = 2, #KEYS do
  local id = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[2], '*',
                        'type', ARGV[3], 'data', ARGV[4])
  redis.call('SPUBLISH', KEYS[i], id .. '|' .. ARGV[3] .. '|' .. ARGV[5] .. '|' .. ARGV[4])
end
return 1
"""


def seen_key(channel: str, envelope_id: str, part: int) -> str:
    """Remembers that ``part`` of an envelope's routing was made: in the slot
    of ``channel``'s stream (its hash tag), routed in the same call."""
    return f"rt:{{{channel}}}:seen:{envelope_id}:{part}"


def _data(payload: Message) -> bytes:
    # Every field, empty ones too: clients read the same keys every time.
    return encode(
        MessageToDict(
            payload, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    )


class Router:
    def __init__(
        self, redis_client: aioredis.Redis, auth: grpc.aio.Channel, retention: int
    ) -> None:
        self.redis = redis_client
        self.retention = retention
        self.auth = auth_pb2_grpc.AuthServiceStub(auth)
        self._route = redis_client.register_script(_ROUTE)

    async def route(
        self, envelope: Envelope, channels: list[str], data: bytes, part: int = 0
    ) -> None:
        """Routes an event to ``channels`` once (``part``: which batch of a
        large routing this is; each is remembered on its own)."""
        streams = [stream_key(c) for c in channels]
        # The live message carries the trace context (when sampled) so the
        # sockets' writes of it join the trace; the stream does not.
        args = [SEEN_SECONDS, self.retention, envelope.type, data, sampled_traceparent()]
        await run_script(
            self.redis,
            self._route,
            [
                (
                    [seen_key(channels[group[0]], envelope.id, part)] + [streams[i] for i in group],
                    args,
                )
                for group in slot_groups(self.redis, streams)
            ],
        )

    async def _on_post_created(self, envelope: Envelope) -> None:
        """A new post goes to the ``feed`` of each of its author's followers,
        a page of followers (one Lua call) at a time."""
        event = PostCreated.FromString(envelope.payload)
        data = _data(event)
        pages = follow_pages(self.auth, "followers", event.author_id, FEED_BATCH)
        part = 0
        async for followers in pages:
            if followers:
                await self.route(envelope, [f"feed:{u}" for u in followers], data, part)
            part += 1

    def handlers(self) -> dict[str, Handler]:
        def on(kind: type[Message], channels: Callable[[Any], list[str]]) -> Handler:
            async def handle(envelope: Envelope) -> None:
                payload = kind.FromString(envelope.payload)
                await self.route(envelope, channels(payload), _data(payload))

            return handle

        def message_channels(event: MessageCreated | MessageDeleted) -> list[str]:
            # The post's watchers, and its author's notifications.
            return [f"post:{event.post_id}", f"user:{event.post_author_id}"]

        return {
            "post.created": self._on_post_created,
            "message.created": on(MessageCreated, message_channels),
            "message.deleted": on(MessageDeleted, message_channels),
            "post.liked": on(PostLiked, lambda e: [f"post:{e.post_id}", f"user:{e.author_id}"]),
        }

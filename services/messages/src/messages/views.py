"""What clients of messages send and see."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated

from msgspec import Meta
from social_common.authors import Author
from social_common.models import Body, Moment, View, text_pattern

from messages import store
from messages.service import MAX_MESSAGE


class NewMessage(Body):
    message: Annotated[
        str,
        Meta(
            description=f"1 to {MAX_MESSAGE} characters once trimmed; no control characters"
            " but line feeds.",
            extra_json_schema={
                "minLength": 1,
                "maxLength": MAX_MESSAGE,
                "pattern": text_pattern(blank=False),
            },
        ),
    ]


class Message(View):
    id: Annotated[uuid.UUID, Meta(description="A UUIDv7.")]
    post_id: uuid.UUID
    author: Author
    message: Annotated[str, Meta(extra_json_schema={"maxLength": MAX_MESSAGE})]
    created_at: Moment


class MessagePage(View):
    items: list[Message]
    next_cursor: str | None


class ExportedMessage(View):
    """A message one sent, in one's export."""

    id: Annotated[uuid.UUID, Meta(description="A UUIDv7.")]
    post_id: uuid.UUID
    message: Annotated[str, Meta(extra_json_schema={"maxLength": MAX_MESSAGE})]
    created_at: Moment


# The bodies the OpenAPI document describes (make openapi).
SCHEMAS = (NewMessage, Message, MessagePage, ExportedMessage)


def message(found: store.Message, authors: Mapping[str, Author]) -> Message:
    """A message with its author's public profile (an account that no longer
    exists keeps its id, and no name)."""
    sender = str(found.sender_id)
    return Message(
        id=found.id,
        post_id=found.post_id,
        author=authors.get(sender) or Author(id=sender, username="", display_name=""),
        message=found.body,
        created_at=found.created_at,
    )


def page(
    messages: Sequence[store.Message],
    authors: Mapping[str, Author],
    next_cursor: str | None,
) -> MessagePage:
    return MessagePage(items=[message(m, authors) for m in messages], next_cursor=next_cursor)


def exported_message(found: store.Message) -> ExportedMessage:
    return ExportedMessage(
        id=found.id, post_id=found.post_id, message=found.body, created_at=found.created_at
    )

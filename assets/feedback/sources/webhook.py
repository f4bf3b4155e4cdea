"""Pushed feedback: `POST /webhooks/feedback/{workspace}` with the workspace's bearer token.

A body is one JSON object or an array of them, each a `PushedItem`. The webhook service
validates it (400 naming the problem), turns each item into a message on queue `feedback` (a
`FeedbackMessage`, idempotency key `feedback_message_key`), and answers 2xx once they are
enqueued; a drain run upserts them. The bearer token is created with the source, shown once, and
stored only as a hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
import psycopg
from msgspec import UNSET, Meta, UnsetType

from assets.feedback.rules import (
    FeedbackItem,
    FeedbackValidationError,
    SourceConfigError,
    SourceRef,
    clean_html,
    make_item_id,
    parse_timestamp,
)
from assets.feedback.sources.base import SourceKind
from assets.feedback.store import issue_webhook_token
from resources.messages import DedupKey, decode, id_key

MAX_ITEMS_PER_REQUEST = 1000
MAX_EXTERNAL_ID_CHARS = 200
MESSAGE_TYPE = "feedback_item"


class PushedItem(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One pushed piece of feedback. `author` must be given (null when anonymous); `external_id`
    may be a number; `text` may be HTML."""

    external_id: str | int
    text: str
    created_at: str  # ISO 8601 with a time zone
    author: str | None | UnsetType = UNSET
    rating: str | int | float | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(str(self.external_id).strip()) <= MAX_EXTERNAL_ID_CHARS:
            raise FeedbackValidationError(
                f"external_id: must be 1..{MAX_EXTERNAL_ID_CHARS} characters"
            )
        if not clean_html(self.text):
            raise FeedbackValidationError("text: required, a non-empty string")
        if self.author is UNSET:
            raise FeedbackValidationError("author: required (null when anonymous)")
        parse_timestamp(self.created_at, "created_at")
        if self.rating is not None and len(str(self.rating)) > 32:
            raise FeedbackValidationError("rating: at most 32 characters")


def validate_item(raw: Any, where: str = "item") -> dict[str, Any]:
    """One pushed item checked and normalised; FeedbackValidationError names the bad field."""
    item = decode(raw, PushedItem, FeedbackValidationError, where=where)
    return {
        "external_id": str(item.external_id).strip(),
        "text": item.text,
        "author": item.author,
        "created_at": parse_timestamp(item.created_at).isoformat(),
        "rating": None if item.rating is None else str(item.rating),
        "metadata": item.metadata or {},
    }


def validate_payload(document: Any) -> list[dict[str, Any]]:
    """A pushed body (object or array of objects) as validated items."""
    if isinstance(document, dict):
        return [validate_item(document)]
    if not isinstance(document, list):
        raise FeedbackValidationError("body must be a JSON object or an array of objects")
    if not document:
        raise FeedbackValidationError("body is an empty array")
    if len(document) > MAX_ITEMS_PER_REQUEST:
        raise FeedbackValidationError(f"at most {MAX_ITEMS_PER_REQUEST} items per request")
    return [validate_item(raw, f"item[{i}]") for i, raw in enumerate(document)]


def to_message(source: SourceRef, item: Mapping[str, Any]) -> dict[str, Any]:
    """The queue message for one validated item. `event_id` covers the content, so an identical
    re-push is a duplicate while an edited one updates the item."""
    item_id = make_item_id(source.workspace_id, source.source_id, item["external_id"])
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"))
    event_id = hashlib.sha256(f"{item_id}\x1f{canonical}".encode()).hexdigest()[:32]
    return {
        "type": MESSAGE_TYPE,
        "tenant_id": source.tenant_id,
        "workspace_id": source.workspace_id,
        "source_id": source.source_id,
        "event_id": event_id,
        "item_id": item_id,
        **item,
    }


class FeedbackMessage(msgspec.Struct, kw_only=True):
    """The envelope of a `feedback` queue message (`to_message`); the item's own fields are a
    `PushedItem`, and other fields (`event_id`, `item_id`) are ignored."""

    type: Literal["feedback_item"]
    tenant_id: Annotated[str, Meta(min_length=1)]
    workspace_id: int
    source_id: int


def feedback_message_key(body: Mapping[str, Any]) -> str | None:
    """Idempotency key of a `feedback` message: its event_id, which covers the item and its
    content, so an identical re-push is a duplicate while an edited one is applied."""
    return id_key("event_id", body)


# Each queue's idempotency key.
MESSAGE_KEYS: dict[str, DedupKey | None] = {"feedback": feedback_message_key}


def item_from_message(body: Any) -> FeedbackItem:
    """The uniform item of a `feedback` queue message (FeedbackValidationError when malformed)."""
    envelope = decode(body, FeedbackMessage, FeedbackValidationError)
    fields = PushedItem.__struct_fields__
    item = validate_item({k: v for k, v in body.items() if k in fields}, "message")
    return FeedbackItem(
        workspace_id=envelope.workspace_id,
        tenant_id=envelope.tenant_id,
        source="webhook",
        source_id=envelope.source_id,
        external_id=item["external_id"],
        author=item["author"],
        text=clean_html(item["text"]),
        created_at=parse_timestamp(item["created_at"]),
        rating=item["rating"],
        raw_data={"metadata": item["metadata"]},
    )


class WebhookKind(SourceKind):
    name = "webhook"
    description = "feedback pushed to POST /webhooks/feedback/{workspace} (bearer token)"
    pulled = False

    def after_create(self, conn: psycopg.Connection, source: SourceRef) -> dict[str, str]:
        others = conn.execute(
            "select count(*) from control.feedback_sources "
            "where workspace_id = %s and kind = 'webhook' and active and source_id <> %s",
            (source.workspace_id, source.source_id),
        ).fetchone()[0]
        if others:
            raise SourceConfigError(
                f"workspace {source.workspace_name!r} already has a webhook source"
            )
        token = issue_webhook_token(conn, source.workspace_id)
        return {
            "webhook URL path": f"/webhooks/feedback/{source.workspace_name}",
            "bearer token (shown once, store it now)": token,
        }


KIND = WebhookKind()

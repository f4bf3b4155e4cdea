"""Pushed feedback: `POST /webhooks/feedback/{workspace}` with the workspace's bearer token.

A body is one JSON object or an array of them, each `{external_id, text, author, created_at,
rating?, metadata?}`. The webhook service validates it (400 naming the problem), turns each item
into a message on queue `feedback`, and answers 2xx once they are enqueued; a drain run upserts
them. The bearer token is created with the source, shown once, and stored only as a hash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import psycopg

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

MAX_ITEMS_PER_REQUEST = 1000
MAX_EXTERNAL_ID_CHARS = 200
ALLOWED_FIELDS = {"external_id", "text", "author", "created_at", "rating", "metadata"}
MESSAGE_TYPE = "feedback_item"


def validate_item(raw: Any, where: str = "item") -> dict[str, Any]:
    """One pushed item checked and normalised; FeedbackValidationError names the bad field."""
    if not isinstance(raw, dict):
        raise FeedbackValidationError(f"{where}: expected a JSON object")
    unknown = sorted(set(raw) - ALLOWED_FIELDS)
    if unknown:
        raise FeedbackValidationError(f"{where}: unknown field(s) {', '.join(unknown)}")
    external_id = raw.get("external_id")
    if isinstance(external_id, bool) or not isinstance(external_id, str | int):
        raise FeedbackValidationError(f"{where}.external_id: required, a string or integer")
    external_id = str(external_id).strip()
    if not external_id or len(external_id) > MAX_EXTERNAL_ID_CHARS:
        raise FeedbackValidationError(
            f"{where}.external_id: must be 1..{MAX_EXTERNAL_ID_CHARS} characters"
        )
    text = raw.get("text")
    if not isinstance(text, str) or not clean_html(text):
        raise FeedbackValidationError(f"{where}.text: required, a non-empty string")
    author = raw.get("author")
    if author is not None and not isinstance(author, str):
        raise FeedbackValidationError(f"{where}.author: must be a string or null")
    if "author" not in raw:
        raise FeedbackValidationError(f"{where}.author: required (null when anonymous)")
    try:
        created_at = parse_timestamp(raw.get("created_at"), f"{where}.created_at")
    except FeedbackValidationError:
        raise
    rating = raw.get("rating")
    if rating is not None:
        if isinstance(rating, bool) or not isinstance(rating, str | int | float):
            raise FeedbackValidationError(f"{where}.rating: must be a number or a short string")
        rating = str(rating)
        if len(rating) > 32:
            raise FeedbackValidationError(f"{where}.rating: at most 32 characters")
    metadata = raw.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise FeedbackValidationError(f"{where}.metadata: must be a JSON object")
    return {
        "external_id": external_id,
        "text": text,
        "author": author,
        "created_at": created_at.isoformat(),
        "rating": rating,
        "metadata": metadata or {},
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


def item_from_message(body: Mapping[str, Any]) -> FeedbackItem:
    """The uniform item of a `feedback` queue message (FeedbackValidationError when malformed)."""
    if body.get("type") != MESSAGE_TYPE:
        raise FeedbackValidationError(f"message type {body.get('type')!r} is not {MESSAGE_TYPE}")
    for key in ("workspace_id", "source_id", "tenant_id"):
        if body.get(key) in (None, ""):
            raise FeedbackValidationError(f"message has no {key}")
    item = validate_item({k: body.get(k) for k in ALLOWED_FIELDS if k in body}, "message")
    return FeedbackItem(
        workspace_id=int(body["workspace_id"]),
        tenant_id=str(body["tenant_id"]),
        source="webhook",
        source_id=int(body["source_id"]),
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

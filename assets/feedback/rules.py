"""The feedback domain's uniform format, as plain data and pure functions.

Every source (a Discourse forum, helpdesk tickets, conversations, pushed webhooks ...) turns what
it reads into `FeedbackItem`s: plain text (HTML removed), author, creation time, an optional
rating and the source's own extras in `raw_data`. `item_id` is a stable hash of (workspace,
source, external id), so a re-fetched or re-pushed item lands on the same row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bs4 import BeautifulSoup

MAX_TEXT_CHARS = 20_000
_SPACES = re.compile(r"\s+")


class SourceConfigError(ValueError):
    """A source's configuration is missing or wrong (the message names the option)."""


class FeedbackValidationError(ValueError):
    """A pushed or fetched item does not have the uniform format (the message names the field)."""


def make_item_id(workspace_id: int, source_id: int, external_id: str) -> str:
    """Stable id of one piece of feedback: the same (workspace, source, external id) -> same id."""
    key = f"{workspace_id}\x1f{source_id}\x1f{external_id}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def content_hash(text: str, rating: str | None) -> str:
    return hashlib.sha256(f"{text}\x1f{rating or ''}".encode()).hexdigest()[:16]


def clean_html(html: str) -> str:
    """Plain text of an HTML fragment (Discourse `cooked`, a ticket's html_body ...).

    Quoted replies and code blocks are someone else's words or machine output, not this author's
    feedback, so they are dropped before the text is taken.
    """
    if "<" not in html and "&" not in html:
        return _SPACES.sub(" ", html).strip()[:MAX_TEXT_CHARS]
    soup = BeautifulSoup(html, "html.parser")
    # find_all, not CSS select: soupsieve costs a third of the parse time
    for node in soup.find_all(("blockquote", "pre", "code", "script", "style")):
        node.decompose()
    for node in soup.find_all("aside", class_="quote"):
        node.decompose()
    return _SPACES.sub(" ", soup.get_text(" ", strip=True)).strip()[:MAX_TEXT_CHARS]


def parse_timestamp(value: Any, field_name: str = "created_at") -> datetime:
    """An aware datetime from ISO 8601 text (a trailing Z allowed); naive times are refused."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise FeedbackValidationError(
                f"{field_name}: not an ISO 8601 timestamp: {value[:40]!r}"
            ) from exc
    else:
        raise FeedbackValidationError(f"{field_name}: expected an ISO 8601 timestamp")
    if parsed.tzinfo is None:
        raise FeedbackValidationError(f"{field_name}: timestamp needs a time zone (e.g. Z)")
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class SourceRef:
    """The source a batch of items comes from, as stored in control.feedback_sources."""

    source_id: int
    workspace_id: int
    workspace_name: str
    tenant_id: str
    name: str
    kind: str
    config: Mapping[str, Any]
    cursor: Mapping[str, Any]


@dataclass(frozen=True)
class FeedbackItem:
    """One piece of feedback in the uniform format."""

    workspace_id: int
    tenant_id: str
    source: str
    source_id: int
    external_id: str
    author: str | None
    text: str
    created_at: datetime
    rating: str | None = None
    raw_data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def item_id(self) -> str:
        return make_item_id(self.workspace_id, self.source_id, self.external_id)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text, self.rating)


@dataclass(frozen=True)
class PulledBatch:
    """Items from one page of a source and the cursor to store with them (one transaction)."""

    items: list[FeedbackItem]
    cursor: dict[str, Any]
    fetched: int = 0  # records read from the source, including ones skipped as already seen


def score_sentiment(texts: list[str]) -> list[tuple[float, str]]:
    """(score in [-1, 1], label) per text with the baseline engine (VADER), for other domains
    (conversations) that score texts the same way the feedback insights do."""
    # Imported here on purpose: the sentiment package loads scikit-learn, which processes that
    # only read or write the uniform format (the webhook service, the CLI) should not pay for.
    from assets.feedback.sentiment import BASELINE, ENGINES, score_texts

    labels, scores = score_texts(ENGINES[BASELINE](), texts)
    return [(float(s), str(label)) for s, label in zip(scores, labels, strict=True)]

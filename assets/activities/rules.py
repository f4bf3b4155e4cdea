"""Ticket activities as data: the message formats of queues `activities` and
`activity_deletes` with their idempotency keys, dashboard categories and the day partitions' names.

Pure (no SQL, no Dagster): the drain job, the email-delivery consumer (failure activities on the
ticket timeline) and the tests all go through `parse_activity`; the insert is
`assets.activities.store.insert_activities`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import msgspec

from resources.messages import DedupKey, decode, id_key

# tenant ids end up in export paths (tenant=<t>/): a conservative, path-safe alphabet
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ACTION_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
MAX_ID_LENGTH = 128
# An event further ahead than this is a producer clock or a bug, not an early event: accepting it
# would create partitions years ahead that retention never reaches.
MAX_FUTURE_SKEW = timedelta(days=2)

# Dashboard categories of user activities, by action. Actions not listed are `other`: the
# helpdesk adds actions faster than we do, and a new action must not be rejected for that.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "conversation": (
        "reply",
        "forward",
        "note",
        "private_note",
        "customer_reply",
        "reply_edited",
        "note_edited",
        "conversation_deleted",
    ),
    "status": (
        "status_changed",
        "ticket_resolved",
        "ticket_closed",
        "ticket_reopened",
        "ticket_pending",
    ),
    "assignment": (
        "assigned",
        "unassigned",
        "reassigned",
        "agent_changed",
        "group_changed",
        "responder_changed",
    ),
    "property": (
        "priority_changed",
        "type_changed",
        "source_changed",
        "subject_changed",
        "tags_added",
        "tags_removed",
        "custom_field_changed",
        "due_by_changed",
        "product_changed",
        "requester_changed",
        "properties_updated",
    ),
    "lifecycle": (
        "ticket_created",
        "ticket_merged",
        "ticket_split",
        "ticket_deleted",
        "ticket_restored",
        "ticket_spammed",
        "ticket_unspammed",
    ),
    "collaboration": (
        "watcher_added",
        "watcher_removed",
        "cc_added",
        "cc_removed",
        "linked",
        "unlinked",
    ),
    "time_tracking": ("timer_started", "timer_stopped", "time_entry_added", "time_entry_edited"),
}
OTHER_CATEGORY = "other"
_CATEGORY_OF = {action: category for category, actions in CATEGORIES.items() for action in actions}


class InvalidActivity(ValueError):
    """An activity event that does not follow the format; the message names the field."""


class ActivityMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A message of queue `activities`, as the helpdesk sends it. Ids may be numbers (stored as
    text); `ticket_id` may be a string of digits; `changes` and `rule` end up in `details`."""

    activity_id: str | int
    tenant_id: str | int
    ticket_id: int | str
    actor_type: Literal["user", "system"]
    actor_id: str | int
    action: str
    occurred_at: str  # ISO 8601 with offset; checked against the clock by `parse_activity`
    type: Literal["activity"] = "activity"
    changes: dict[str, Any] | None = None
    rule: dict[str, Any] | None = None
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for name in ("activity_id", "tenant_id", "actor_id"):
            _check_identifier(name, getattr(self, name))
        if not TENANT_ID_RE.match(str(self.tenant_id)):
            raise InvalidActivity(
                "tenant_id: only letters, digits, '.', '_' and '-' (at most 64), "
                f"got {str(self.tenant_id)!r:.40}"
            )
        parse_ticket_id(self.ticket_id)
        if not ACTION_RE.match(self.action):
            raise InvalidActivity(
                f"action: expected a lower-case name like 'status_changed', got {self.action!r:.40}"
            )
        details = self.details
        if details and ("changes" in details or "rule" in details):
            clash = "changes" if "changes" in details else "rule"
            raise InvalidActivity(f"details: must not contain {clash!r} (a top-level field)")
        # JSON-serialisable: checked by `parse_activity`, which encodes the details once.


class ActivityDeleteMessage(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A message of queue `activity_deletes`: forget every activity of one ticket."""

    tenant_id: str
    ticket_id: int | str
    type: Literal["activity_delete"] = "activity_delete"

    def __post_init__(self) -> None:
        if not TENANT_ID_RE.match(self.tenant_id):
            raise InvalidActivity(f"tenant_id: not a valid tenant id: {self.tenant_id!r:.40}")
        parse_ticket_id(self.ticket_id)


def activity_key(body: Mapping[str, Any]) -> str | None:
    """Idempotency key of an `activities` message: its activity_id, unique across tenants (the
    warehouse keeps one ledger of them, raw.activity_ids)."""
    return id_key("activity_id", body)


# Each queue's idempotency key. A delete has no id of its own: its body's hash serves, and a
# repeated delete changes nothing anyway.
MESSAGE_KEYS: dict[str, DedupKey | None] = {"activities": activity_key, "activity_deletes": None}


# How `details` is stored (jsonb): compact, and NaN/Infinity refused as jsonb refuses them.
_encode_details = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
_fast_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Activity:
    activity_id: str
    tenant_id: str
    ticket_id: int
    actor_type: str
    actor_id: str
    action: str
    occurred_at: datetime
    category: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # `details` as the JSON text stored, encoded once by `parse_activity` (None: on insert)
    details_json: str | None = field(default=None, repr=False, compare=False)

    @property
    def day(self) -> date:
        """The UTC day whose partition holds this activity."""
        return self.occurred_at.astimezone(UTC).date()


def category_for(actor_type: str, action: str) -> str | None:
    """The dashboard category of an activity: user activities only, derived from the action."""
    if actor_type != "user":
        return None
    return _CATEGORY_OF.get(action, OTHER_CATEGORY)


def _check_identifier(name: str, value: str | int) -> None:
    text = str(value)
    if not text.strip():
        raise InvalidActivity(f"{name}: must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise InvalidActivity(f"{name}: longer than {MAX_ID_LENGTH} characters")
    if not text.isprintable():
        raise InvalidActivity(f"{name}: contains control characters")


def parse_ticket_id(value: Any) -> int:
    """A ticket id: a positive integer (a string of digits is accepted)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidActivity(f"ticket_id: expected a positive integer, got {value!r:.40}")
    if not 1 <= value < 2**63:
        raise InvalidActivity(f"ticket_id: expected a positive integer, got {value}")
    return value


def _occurred_at(value: str, now: datetime) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidActivity(f"occurred_at: not an ISO 8601 timestamp: {value!r:.40}") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidActivity(f"occurred_at: needs a UTC offset (e.g. +00:00 or Z): {value!r:.40}")
    if moment.year < 2000:
        raise InvalidActivity(f"occurred_at: before the year 2000: {value!r:.40}")
    if moment > now + MAX_FUTURE_SKEW:
        raise InvalidActivity(
            f"occurred_at: more than {MAX_FUTURE_SKEW.days} days in the future: {value!r:.40}"
        )
    return moment


def parse_activity(body: Any, *, now: datetime | None = None, from_json: bool = False) -> Activity:
    """Validate one activity event (a queue message body) strictly and return the Activity.

    Raises InvalidActivity naming the field and the problem. `now` (default: the current time)
    bounds how far in the future `occurred_at` may be. `from_json`: the body was decoded from
    JSON text (a queue message), so its values are JSON's own and the details are encoded on a
    faster path.
    """
    message = decode(body, ActivityMessage, InvalidActivity)
    details: dict[str, Any] = dict(message.details or {})
    if message.changes is not None:
        details["changes"] = message.changes
    if message.rule is not None:
        details["rule"] = message.rule
    details_json = details_text(details, from_json=from_json)
    occurred_at = _occurred_at(message.occurred_at, now or datetime.now(UTC))
    return Activity(
        activity_id=str(message.activity_id),
        tenant_id=str(message.tenant_id),
        ticket_id=parse_ticket_id(message.ticket_id),
        actor_type=message.actor_type,
        actor_id=str(message.actor_id),
        action=message.action,
        occurred_at=occurred_at,
        category=category_for(message.actor_type, message.action),
        details=details,
        details_json=details_json,
    )


def details_text(details: dict[str, Any], *, from_json: bool = False) -> str:
    """An activity's details as the JSON text stored, or InvalidActivity when JSON cannot hold
    them (NaN, Infinity, objects that are no JSON).

    `from_json`: the details were decoded from JSON text, so they hold only JSON's types, which
    msgspec encodes as `json` does, several times faster. It writes NaN and Infinity as `null`
    (where `json` refuses them): text with a `null` takes the checked path.
    """
    if from_json:
        try:
            text = _fast_encode(details)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if b"null" not in text:
                return text.decode()
    try:
        return _encode_details(details)
    except (ValueError, TypeError) as exc:
        raise InvalidActivity(f"details: not JSON-serialisable ({exc})") from None


@dataclass(frozen=True)
class TicketDelete:
    tenant_id: str
    ticket_id: int


def parse_ticket_delete(body: Any) -> TicketDelete:
    """Validate a message of queue activity_deletes: `{type?, tenant_id, ticket_id}`.

    Raises InvalidActivity naming the field and the problem.
    """
    message = decode(body, ActivityDeleteMessage, InvalidActivity)
    return TicketDelete(tenant_id=message.tenant_id, ticket_id=parse_ticket_id(message.ticket_id))


def partition_name(day: date) -> str:
    """The partition of raw.activities holding `day` (UTC), without schema."""
    return f"activities_p{day:%Y%m%d}"


def day_of_partition(name: str) -> date | None:
    """The UTC day of a partition named by `partition_name`; None for any other name."""
    match = re.fullmatch(r"activities_p(\d{8})", name)
    return datetime.strptime(match.group(1), "%Y%m%d").date() if match else None

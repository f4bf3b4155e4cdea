"""Ticket activities as data: the event format, its strict validation, dashboard categories
and the day partitions' names.

Pure functions (no SQL, no Dagster): the drain job, the email-delivery consumer (failure
activities on the ticket timeline) and the tests all go through `parse_activity`; the insert is
`assets.activities.store.insert_activities`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

ACTOR_TYPES = ("user", "system")
REQUIRED_FIELDS = ("activity_id", "tenant_id", "ticket_id", "actor_type", "actor_id", "action")
OPTIONAL_FIELDS = ("type", "changes", "rule", "details")
KNOWN_FIELDS = frozenset((*REQUIRED_FIELDS, "occurred_at", *OPTIONAL_FIELDS))
MESSAGE_TYPE = "activity"

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

    @property
    def day(self) -> date:
        """The UTC day whose partition holds this activity."""
        return self.occurred_at.astimezone(UTC).date()


def category_for(actor_type: str, action: str) -> str | None:
    """The dashboard category of an activity: user activities only, derived from the action."""
    if actor_type != "user":
        return None
    return _CATEGORY_OF.get(action, OTHER_CATEGORY)


def _identifier(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidActivity(f"{name}: expected a non-empty string, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise InvalidActivity(f"{name}: must not be empty")
    if len(text) > MAX_ID_LENGTH:
        raise InvalidActivity(f"{name}: longer than {MAX_ID_LENGTH} characters")
    if not text.isprintable():
        raise InvalidActivity(f"{name}: contains control characters")
    return text


def parse_ticket_id(value: Any) -> int:
    """A ticket id: a positive integer (a string of digits is accepted)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidActivity(f"ticket_id: expected a positive integer, got {value!r:.40}")
    if not 1 <= value < 2**63:
        raise InvalidActivity(f"ticket_id: expected a positive integer, got {value}")
    return value


def _occurred_at(value: Any, now: datetime) -> datetime:
    if not isinstance(value, str):
        raise InvalidActivity(
            f"occurred_at: expected an ISO 8601 string with offset, got {type(value).__name__}"
        )
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


def _optional_object(body: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidActivity(f"{name}: expected a JSON object, got {type(value).__name__}")
    return value


def parse_activity(body: dict, *, now: datetime | None = None) -> Activity:
    """Validate one activity event (a queue message body) strictly and return the Activity.

    Raises InvalidActivity naming the field and the problem. `now` (default: the current time)
    bounds how far in the future `occurred_at` may be.
    """
    if not isinstance(body, dict):
        raise InvalidActivity(f"event: expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise InvalidActivity(f"{unknown[0]}: unknown field")
    for name in (*REQUIRED_FIELDS, "occurred_at"):
        if body.get(name) is None:
            raise InvalidActivity(f"{name}: missing")
    if body.get("type", MESSAGE_TYPE) != MESSAGE_TYPE:
        raise InvalidActivity(f"type: expected {MESSAGE_TYPE!r}, got {body.get('type')!r:.40}")

    activity_id = _identifier(body, "activity_id")
    tenant_id = _identifier(body, "tenant_id")
    if not TENANT_ID_RE.match(tenant_id):
        raise InvalidActivity(
            f"tenant_id: only letters, digits, '.', '_' and '-' (at most 64), got {tenant_id!r:.40}"
        )
    ticket_id = parse_ticket_id(body["ticket_id"])
    actor_type = body["actor_type"]
    if actor_type not in ACTOR_TYPES:
        raise InvalidActivity(f"actor_type: expected 'user' or 'system', got {actor_type!r:.40}")
    actor_id = _identifier(body, "actor_id")
    action = body["action"]
    if not isinstance(action, str) or not ACTION_RE.match(action):
        raise InvalidActivity(
            f"action: expected a lower-case name like 'status_changed', got {action!r:.40}"
        )
    occurred_at = _occurred_at(body["occurred_at"], now or datetime.now(UTC))

    changes = _optional_object(body, "changes")
    rule = _optional_object(body, "rule")
    extra = _optional_object(body, "details") or {}
    clash = sorted({"changes", "rule"} & set(extra))
    if clash:
        raise InvalidActivity(f"details: must not contain {clash[0]!r} (a top-level field)")
    details: dict[str, Any] = dict(extra)
    if changes is not None:
        details["changes"] = changes
    if rule is not None:
        details["rule"] = rule
    try:
        json.dumps(details, allow_nan=False)
    except ValueError as exc:
        raise InvalidActivity(f"details: not JSON-serialisable ({exc})") from None

    return Activity(
        activity_id=activity_id,
        tenant_id=tenant_id,
        ticket_id=ticket_id,
        actor_type=actor_type,
        actor_id=actor_id,
        action=action,
        occurred_at=occurred_at,
        category=category_for(actor_type, action),
        details=details,
    )


def partition_name(day: date) -> str:
    """The partition of raw.activities holding `day` (UTC), without schema."""
    return f"activities_p{day:%Y%m%d}"


def day_of_partition(name: str) -> date | None:
    """The UTC day of a partition named by `partition_name`; None for any other name."""
    match = re.fullmatch(r"activities_p(\d{8})", name)
    return datetime.strptime(match.group(1), "%Y%m%d").date() if match else None

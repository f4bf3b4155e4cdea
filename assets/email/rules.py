"""Email delivery rules as plain functions: the message formats of queues `email_sent` and
`email_events` with their idempotency keys, which provider event means what, the notification
status state machine, internal senders, the "7 days plus today" window and the retention cutoff.

Statuses: `sending` (handed to the provider) -> `pending` (the provider accepted it) -> one final
status: `delivered`, `temporary-failure`, `permanent-failure`, `technical-failure`. A receipt
changes a status only while it is `sending` or `pending`, so a status never changes twice; a
temporary failure is `temporary-failure` from `pending` and `permanent-failure` from `sending`;
duplicates and late receipts have no effect once a final status is set. Opens, clicks, complaints
and unsubscribes are recorded as delivery events and never change a status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec

from assets.activities.rules import TENANT_ID_RE, parse_ticket_id
from resources.messages import DedupKey, decode, id_key

OPEN_STATUSES = ("sending", "pending")
FAILURE_STATUSES = ("temporary-failure", "permanent-failure", "technical-failure")
FINAL_STATUSES = ("delivered", *FAILURE_STATUSES)

# What a provider event means. Final outcomes are status names; the rest never change a status
# except `accepted` (sending -> pending).
Outcome = Literal[
    "delivered",
    "temporary-failure",
    "permanent-failure",
    "technical-failure",
    "accepted",
    "opened",
    "clicked",
    "complained",
    "unsubscribed",
    "other",
]
Provider = Literal["mailgun", "sendgrid", "ses"]

DEFAULT_RETENTION_DAYS = 7
MAX_STATS_DAYS = 7

# uuid5 namespace for the failure activity ids (fixed: ids must be the same in every process)
FAILURE_ACTIVITY_NAMESPACE = uuid.UUID("6a0c7b1e-5f7d-4c4e-9a51-3e1f3f0d2b7a")


def classify_mailgun(event: str, severity: str | None = None) -> str:
    """Mailgun `event-data.event` (+ `severity` for `failed`) -> outcome."""
    event = (event or "").lower()
    if event == "failed":
        return (
            "permanent-failure"
            if (severity or "").lower() == "permanent"
            else ("temporary-failure")
        )
    return {
        "accepted": "accepted",
        "delivered": "delivered",
        "rejected": "technical-failure",
        "opened": "opened",
        "clicked": "clicked",
        "complained": "complained",
        "unsubscribed": "unsubscribed",
    }.get(event, "other")


def classify_sendgrid(event: str, bounce_type: str | None = None) -> str:
    """SendGrid `event` (+ `type` of a bounce: `bounce` or `blocked`) -> outcome."""
    event = (event or "").lower()
    if event == "bounce":
        return (
            "temporary-failure"
            if (bounce_type or "").lower() == "blocked"
            else ("permanent-failure")
        )
    return {
        "processed": "accepted",
        "delivered": "delivered",
        "deferred": "temporary-failure",
        "blocked": "temporary-failure",
        "dropped": "permanent-failure",
        "open": "opened",
        "click": "clicked",
        "spamreport": "complained",
        "unsubscribe": "unsubscribed",
        "group_unsubscribe": "unsubscribed",
    }.get(event, "other")


def classify_ses(event_type: str, bounce_type: str | None = None) -> str:
    """SES `eventType`/`notificationType` (+ `bounce.bounceType`) -> outcome."""
    event_type = (event_type or "").lower()
    if event_type == "bounce":
        return "permanent-failure" if (bounce_type or "") == "Permanent" else "temporary-failure"
    return {
        "send": "accepted",
        "delivery": "delivered",
        "deliverydelay": "temporary-failure",
        "reject": "technical-failure",
        "renderingfailure": "technical-failure",
        "open": "opened",
        "click": "clicked",
        "complaint": "complained",
        "subscription": "unsubscribed",
    }.get(event_type, "other")


def status_transitions(outcome: str) -> dict[str, str]:
    """current status -> new status for a receipt with `outcome`; a status not in the map is
    left as it is. The SQL of the receipts drain is built from this map (its WHERE is the map's
    keys), so two drains racing on one notification cannot both change it.

    The seed's rule for temporary failures: `temporary-failure` only from `pending` (the provider
    had accepted the message); a failure receipt for a message still `sending` is a
    `permanent-failure`.
    """
    if outcome == "temporary-failure":
        return {"pending": "temporary-failure", "sending": "permanent-failure"}
    if outcome in FINAL_STATUSES:
        return dict.fromkeys(OPEN_STATUSES, outcome)
    if outcome == "accepted":
        return {"sending": "pending"}
    return {}


def next_status(current: str, outcome: str) -> str | None:
    """The new status after a receipt, or None when the receipt must not change it."""
    return status_transitions(outcome).get(current)


def is_internal_sender(sender: str | None, internal_senders: Iterable[str]) -> bool:
    """True for mail from our own addresses (invitations, address checks): receipts ignored.
    Entries are addresses or `@domain`."""
    if not sender:
        return False
    address = sender.strip().lower()
    if "<" in address and address.endswith(">"):
        address = address[address.rindex("<") + 1 : -1]
    for entry in internal_senders:
        entry = entry.strip().lower()
        if entry and (address == entry or (entry.startswith("@") and address.endswith(entry))):
            return True
    return False


def mask_address(address: str) -> str:
    """What a timeline keeps of a recipient after the notification's retention: the first
    character of the local part and the domain (`j***@example.org`). `MASK_ADDRESS_SQL` is the
    same rule in SQL, for the retention batch."""
    local, at, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if at else "***"


# `mask_address` over the SQL expression `%(column)s`.
MASK_ADDRESS_SQL = (
    "case when position('@' in {column}) > 0 "
    "then left(split_part({column}, '@', 1), 1) || '***@' || "
    "substr({column}, position('@' in {column}) + 1) else '***' end"
)


def failure_activity_id(provider: str, provider_event_id: str) -> str:
    """The id of the timeline activity for one failure receipt: the same for every duplicate."""
    return str(uuid.uuid5(FAILURE_ACTIVITY_NAMESPACE, f"{provider}:{provider_event_id}"))


# --- days, windows, retention ------------------------------------------------------------------


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """[start, end) of a calendar day in `zone`, as aware datetimes (DST-length days included)."""
    start = datetime.combine(day, time.min, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)
    return start, end


def stats_days(today: date, days: int) -> list[date]:
    """The last `days` whole days plus today, oldest first: on a Monday with days=7 that is last
    Monday through today (8 dates), so the dashboard's numbers line up with the week."""
    if not 0 <= days <= MAX_STATS_DAYS:
        raise ValueError(f"days must be between 0 and {MAX_STATS_DAYS}, not {days}")
    return [today - timedelta(days=n) for n in range(days, -1, -1)]


def retention_cutoff(now: datetime, zone: ZoneInfo, days: int = DEFAULT_RETENTION_DAYS) -> datetime:
    """Notifications sent before this moment are past retention: midnight today in `zone`,
    `days` days back. Keeps `days` full days plus today, whatever the hour of the run."""
    if days < 1:
        raise ValueError("retention must be at least one day")
    today = local_day(now, zone)
    return day_bounds(today - timedelta(days=days), zone)[0]


# --- message formats: queues email_sent and email_events ----------------------------------------


class InvalidMessage(ValueError):
    """A queue message that does not follow its format; the message names the field."""


def _check_text(name: str, value: str | int, max_length: int = 512) -> None:
    """An id or name: a string (or a number, taken as its text), not blank, not too long."""
    text = str(value).strip()
    if not text:
        raise InvalidMessage(f"{name}: missing or not a string")
    if len(text) > max_length:
        raise InvalidMessage(f"{name}: longer than {max_length} characters")


def _check_tenant(value: str | int) -> None:
    _check_text("tenant_id", value, 64)
    if not TENANT_ID_RE.match(str(value).strip()):
        raise InvalidMessage(f"tenant_id: only letters, digits, '.', '_' and '-': {value!r:.40}")


def _moment(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidMessage(f"{name}: not an ISO 8601 timestamp: {value!r:.40}") from None
    if moment.tzinfo is None:
        raise InvalidMessage(f"{name}: needs a UTC offset: {value!r:.40}")
    return moment


class EmailSentMessage(msgspec.Struct, kw_only=True):
    """A message of queue `email_sent`: one email the helpdesk handed to a provider. Fields not
    declared here are kept as custom parameters; ids may be numbers (stored as text)."""

    notification_id: str | int
    tenant_id: str | int
    template_id: str | int
    recipient: str
    provider: Provider
    provider_reference: str | int  # the provider's message id; surrounding <> are dropped
    sent_at: str  # ISO 8601 with offset
    created_at: str | None = None  # default: sent_at
    ticket_id: int | str | None = None
    custom_params: dict[str, Any] | None = None
    type: str | None = None

    def __post_init__(self) -> None:
        _check_text("notification_id", self.notification_id, 128)
        _check_tenant(self.tenant_id)
        _check_text("template_id", self.template_id, 128)
        _check_text("recipient", self.recipient, 320)
        if "@" not in self.recipient:
            raise InvalidMessage("recipient: not an email address")
        _check_text("provider_reference", self.provider_reference)
        if self.ticket_id is not None:
            parse_ticket_id(self.ticket_id)
        _moment(self.sent_at, "sent_at")
        if self.created_at is not None:
            _moment(self.created_at, "created_at")


class DeliveryReceiptMessage(msgspec.Struct, kw_only=True):
    """A message of queue `email_events` (and `email_events.<pod>`): one provider event, as
    `webhooks/events.py` writes it. Fields not declared here (`event_id`, `custom_params`) are
    ignored; `severity`, `reason`, `recipient` and `sender` are the provider's own values, kept as
    text whatever their JSON type."""

    provider: Provider
    provider_event_id: str | int
    provider_reference: str | int
    event_type: str | int
    outcome: Outcome
    occurred_at: str  # ISO 8601 with offset
    tenant_id: str | int | None = None  # from the custom parameters; unknown -> the default pod
    payload: dict[str, Any] | None = None
    severity: Any = None
    reason: Any = None
    recipient: Any = None
    sender: Any = None

    def __post_init__(self) -> None:
        _check_text("provider_event_id", self.provider_event_id)
        _check_text("provider_reference", self.provider_reference)
        _check_text("event_type", self.event_type, 64)
        if self.tenant_id not in (None, ""):
            _check_tenant(self.tenant_id)
        _moment(self.occurred_at, "occurred_at")


def notification_key(body: Mapping[str, Any]) -> str | None:
    """Idempotency key of an `email_sent` message: its notification_id, unique across tenants."""
    return id_key("notification_id", body)


def receipt_key(body: Mapping[str, Any]) -> str | None:
    """Idempotency key of an `email_events` message: its event_id, `<provider>:<provider event
    id>`, unique per provider. Never the notification's id: one notification has many events."""
    return id_key("event_id", body)


# Each queue's idempotency key (`email_events.<pod>` carries `email_events`' messages).
MESSAGE_KEYS: dict[str, DedupKey | None] = {
    "email_sent": notification_key,
    "email_events": receipt_key,
}


@dataclass(frozen=True)
class SentNotification:
    notification_id: str
    tenant_id: str
    ticket_id: int | None
    template_id: str
    recipient: str
    provider: str
    provider_reference: str
    sent_at: datetime
    created_at: datetime
    custom_params: dict[str, Any] = field(default_factory=dict)


def parse_sent_notification(body: Any) -> SentNotification:
    """Validate an `email_sent` message. Unknown fields are kept as custom parameters."""
    message = decode(body, EmailSentMessage, InvalidMessage)
    declared = EmailSentMessage.__struct_fields__
    extra = {k: v for k, v in body.items() if k not in declared}
    sent_at = _moment(message.sent_at, "sent_at")
    created_at = _moment(message.created_at, "created_at") if message.created_at else sent_at
    return SentNotification(
        notification_id=str(message.notification_id).strip(),
        tenant_id=str(message.tenant_id).strip(),
        ticket_id=None if message.ticket_id is None else parse_ticket_id(message.ticket_id),
        template_id=str(message.template_id).strip(),
        recipient=message.recipient.strip(),
        provider=message.provider,
        provider_reference=str(message.provider_reference).strip().strip("<>"),
        sent_at=sent_at,
        created_at=created_at,
        custom_params={**extra, **(message.custom_params or {})},
    )


@dataclass(frozen=True)
class Receipt:
    provider: str
    provider_event_id: str
    provider_reference: str
    tenant_id: str | None
    event_type: str
    outcome: str
    occurred_at: datetime
    payload: dict[str, Any]
    severity: str | None = None
    reason: str | None = None
    recipient: str | None = None
    sender: str | None = None


def parse_receipt(body: Any) -> Receipt:
    """Validate an `email_events` message (see webhooks/events.py for its shape)."""
    message = decode(body, DeliveryReceiptMessage, InvalidMessage)

    def text(value: Any) -> str | None:
        return None if value in (None, "") else str(value)

    return Receipt(
        provider=message.provider,
        provider_event_id=str(message.provider_event_id).strip(),
        provider_reference=str(message.provider_reference).strip(),
        tenant_id=None if message.tenant_id in (None, "") else str(message.tenant_id).strip(),
        event_type=str(message.event_type).strip(),
        outcome=message.outcome,
        occurred_at=_moment(message.occurred_at, "occurred_at"),
        payload=message.payload or {},
        severity=text(message.severity),
        reason=text(message.reason),
        recipient=text(message.recipient),
        sender=text(message.sender),
    )

"""Email delivery rules as plain functions: which provider event means what, the notification
status state machine, internal senders, the "7 days plus today" window and the retention cutoff.

Statuses: `sending` (handed to the provider) -> `pending` (the provider accepted it) -> one final
status: `delivered`, `temporary-failure`, `permanent-failure`, `technical-failure`. A receipt
changes a status only while it is `sending` or `pending`, so a status never changes twice;
duplicates and late receipts have no effect once a final status is set. Opens, clicks, complaints
and unsubscribes are recorded as delivery events and never change a status.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

STATUSES = (
    "sending",
    "pending",
    "delivered",
    "temporary-failure",
    "permanent-failure",
    "technical-failure",
)
OPEN_STATUSES = ("sending", "pending")
FAILURE_STATUSES = ("temporary-failure", "permanent-failure", "technical-failure")
FINAL_STATUSES = ("delivered", *FAILURE_STATUSES)

# What a provider event means. Final outcomes are status names; the rest never change a status
# except `accepted` (sending -> pending).
NON_STATUS_OUTCOMES = ("accepted", "opened", "clicked", "complained", "unsubscribed", "other")
OUTCOMES = FINAL_STATUSES + NON_STATUS_OUTCOMES
PROVIDERS = ("mailgun", "sendgrid", "ses")

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


def status_for_outcome(outcome: str) -> str | None:
    """The status an outcome sets, or None for outcomes that never set one."""
    if outcome in FINAL_STATUSES:
        return outcome
    if outcome == "accepted":
        return "pending"
    return None


def statuses_it_may_change(outcome: str) -> tuple[str, ...]:
    """The current statuses from which `outcome` may move a notification (the UPDATE's WHERE)."""
    if outcome in FINAL_STATUSES:
        return OPEN_STATUSES
    if outcome == "accepted":
        return ("sending",)
    return ()


def next_status(current: str, outcome: str) -> str | None:
    """The new status after a receipt, or None when the receipt must not change it."""
    if current in statuses_it_may_change(outcome):
        return status_for_outcome(outcome)
    return None


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

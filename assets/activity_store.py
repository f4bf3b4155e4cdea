"""Keeping `raw.activities` in shape and reading it: day partitions ahead of time, retention by
partition drop, ticket deletes, and a ticket's timeline.

Plain functions over a psycopg connection; none of them commits (the caller's block is the
transaction). The Dagster jobs in `assets/activities.py` and the CLI call them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from assets.activity_events import (
    TENANT_ID_RE,
    InvalidActivity,
    day_of_partition,
    ensure_partitions,
    insert_activities,
    parse_activity,
    parse_ticket_id,
)
from resources.queues import BatchOutcome, Message

DEFAULT_RETENTION_DAYS = 90
DEFAULT_DAYS_AHEAD = 3
DELETE_MESSAGE_TYPE = "activity_delete"


def utc_today(now: datetime | None = None) -> date:
    return (now or datetime.now(UTC)).astimezone(UTC).date()


def retention_cutoff(today: date, retention_days: int) -> date:
    """The oldest day kept: days before it are dropped (and events for them refused)."""
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, got {retention_days}")
    return today - timedelta(days=retention_days)


# --- partitions ----------------------------------------------------------------------------------


def partition_days(conn: psycopg.Connection) -> list[date]:
    """The days that have a partition, oldest first."""
    rows = conn.execute(
        """
        select c.relname from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'raw.activities'::regclass
        """
    ).fetchall()
    return sorted(day for (name,) in rows if (day := day_of_partition(name)) is not None)


def ensure_partitions_ahead(
    conn: psycopg.Connection, today: date, days_ahead: int = DEFAULT_DAYS_AHEAD
) -> list[date]:
    """Create today's partition and the next `days_ahead` days' when missing, so inserts never
    wait on DDL at midnight. Returns the days that now exist in that window."""
    window = [today + timedelta(days=n) for n in range(days_ahead + 1)]
    ensure_partitions(conn, window)
    return window


def drop_expired_partitions(
    conn: psycopg.Connection, today: date, retention_days: int = DEFAULT_RETENTION_DAYS
) -> list[date]:
    """Drop the partitions of days older than the retention period (a partition drop, never a
    row-by-row delete of activities) and forget their ids in the dedup ledger.

    Returns the dropped days. Dropping takes a short exclusive lock on raw.activities.
    """
    cutoff = retention_cutoff(today, retention_days)
    expired = [day for day in partition_days(conn) if day < cutoff]
    if expired:
        # A drop waits for readers of the partition (a long export); while it waits, inserts
        # queue behind it. Give up after a while instead: the schedule tries again tomorrow.
        conn.execute("set local lock_timeout = '30s'")
    for day in expired:
        conn.execute(
            sql.SQL("drop table if exists raw.{}").format(
                sql.Identifier(f"activities_p{day:%Y%m%d}")
            )
        )
    # The ledger is an index of ids, not activities; events that old are refused on arrival
    # (see reject_expired), so their ids can no longer be repeated into the table.
    conn.execute(
        "delete from raw.activity_ids where occurred_at < %s",
        (datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC),),
    )
    return expired


def is_expired(occurred_at: datetime, today: date, retention_days: int) -> bool:
    """An event whose day retention has already dropped (or would drop at once)."""
    return occurred_at.astimezone(UTC).date() < retention_cutoff(today, retention_days)


# --- deletes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketDelete:
    tenant_id: str
    ticket_id: int


_DELETE_FIELDS = frozenset(("type", "tenant_id", "ticket_id"))


def parse_ticket_delete(body: dict) -> TicketDelete:
    """Validate a message of queue activity_deletes: `{type, tenant_id, ticket_id}`.

    `type` is optional; when given it must be "activity_delete". Raises InvalidActivity.
    """
    if not isinstance(body, dict):
        raise InvalidActivity(f"message: expected a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - _DELETE_FIELDS)
    if unknown:
        raise InvalidActivity(f"{unknown[0]}: unknown field")
    if body.get("type", DELETE_MESSAGE_TYPE) != DELETE_MESSAGE_TYPE:
        raise InvalidActivity(
            f"type: expected {DELETE_MESSAGE_TYPE!r}, got {body.get('type')!r:.40}"
        )
    tenant_id = body.get("tenant_id")
    if tenant_id is None:
        raise InvalidActivity("tenant_id: missing")
    if not isinstance(tenant_id, str) or not TENANT_ID_RE.match(tenant_id):
        raise InvalidActivity(f"tenant_id: not a valid tenant id: {tenant_id!r:.40}")
    if body.get("ticket_id") is None:
        raise InvalidActivity("ticket_id: missing")
    return TicketDelete(tenant_id=tenant_id, ticket_id=parse_ticket_id(body["ticket_id"]))


def delete_ticket_activities(conn: psycopg.Connection, deletes: Sequence[TicketDelete]) -> int:
    """Remove every activity of the given tickets from every partition and remember the tickets,
    so activities of theirs that arrive later are not stored. Idempotent; returns rows deleted."""
    if not deletes:
        return 0
    tenants = [d.tenant_id for d in deletes]
    tickets = [d.ticket_id for d in deletes]
    conn.execute(
        """
        insert into raw.activity_deleted_tickets (tenant_id, ticket_id)
        select * from unnest(%s::text[], %s::bigint[])
        on conflict do nothing
        """,
        (tenants, tickets),
    )
    cur = conn.execute(
        """
        delete from raw.activities a
        using (select distinct * from unnest(%s::text[], %s::bigint[]) as t(tenant_id, ticket_id))
            as d
        where a.tenant_id = d.tenant_id and a.ticket_id = d.ticket_id
        """,
        (tenants, tickets),
    )
    return cur.rowcount


# --- the timeline --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    occurred_at: datetime
    activity_id: str
    actor_type: str
    actor_id: str
    action: str
    category: str | None
    details: dict[str, Any]

    def describe(self) -> str:
        """One line for people: when, who, what, and the details."""
        import json

        who = f"{self.actor_type}:{self.actor_id}"
        what = self.action + (f" [{self.category}]" if self.category else "")
        extra = json.dumps(self.details, sort_keys=True, ensure_ascii=False) if self.details else ""
        when = self.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{when}  {who:<24} {what:<36} {extra}".rstrip()


def ticket_timeline(
    conn: psycopg.Connection, tenant_id: str, ticket_id: int
) -> list[TimelineEntry]:
    """A ticket's activities, user and system, oldest first (ties broken by activity_id).

    Served by the index (tenant_id, ticket_id, occurred_at, activity_id) of every partition.
    """
    rows = conn.execute(
        """
        select occurred_at, activity_id, actor_type, actor_id, action, category, details
        from raw.activities
        where tenant_id = %s and ticket_id = %s
        order by occurred_at, activity_id
        """,
        (tenant_id, ticket_id),
    ).fetchall()
    return [TimelineEntry(*row) for row in rows]


# --- consuming the queues ------------------------------------------------------------------------


@dataclass
class IngestTally:
    """What a drain wrote, beside the queue-level DrainReport."""

    inserted: int = 0
    already_stored: int = 0
    deleted: int = 0


ConnectionFactory = Callable[[], AbstractContextManager[psycopg.Connection]]


def activity_batch_applier(
    connection: ConnectionFactory,
    tally: IngestTally,
    *,
    today: date,
    retention_days: int = DEFAULT_RETENTION_DAYS,
) -> Callable[[list[Message]], BatchOutcome]:
    """The `apply_batch` of the activities drain: validate each message (malformed or expired
    ones are rejected with the reason), then insert the rest in one transaction. A database
    error propagates, so `drain` retries the whole batch later."""

    def apply(messages: list[Message]) -> BatchOutcome:
        rejected: dict[str, str] = {}
        valid = []
        for message in messages:
            try:
                activity = parse_activity(message.body)
            except InvalidActivity as exc:
                rejected[message.receipt] = f"invalid activity: {exc}"
                continue
            if is_expired(activity.occurred_at, today, retention_days):
                rejected[message.receipt] = (
                    f"occurred_at: {activity.occurred_at.isoformat()} is older than the "
                    f"retention period ({retention_days} days)"
                )
                continue
            valid.append(activity)
        if valid:
            with connection() as conn:
                inserted = insert_activities(conn, valid)
            tally.inserted += inserted
            tally.already_stored += len(valid) - inserted
        return BatchOutcome(rejected=rejected)

    return apply


def delete_batch_applier(
    connection: ConnectionFactory, tally: IngestTally
) -> Callable[[list[Message]], BatchOutcome]:
    """The `apply_batch` of the activity_deletes drain."""

    def apply(messages: list[Message]) -> BatchOutcome:
        rejected: dict[str, str] = {}
        deletes = []
        for message in messages:
            try:
                deletes.append(parse_ticket_delete(message.body))
            except InvalidActivity as exc:
                rejected[message.receipt] = f"invalid activity delete: {exc}"
        if deletes:
            with connection() as conn:
                tally.deleted += delete_ticket_activities(conn, deletes)
        return BatchOutcome(rejected=rejected)

    return apply

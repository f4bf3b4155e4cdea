"""The activities domain's SQL: the idempotent bulk insert into `raw.activities`, day
partitions ahead of time, retention by partition drop, ticket deletes, and a ticket's timeline.

Plain functions over a psycopg connection; none of them commits (the caller's block is the
transaction). The Dagster definitions (`assets/activities/defs.py`), the email domain and
the CLI call them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from assets.activities.rules import (
    Activity,
    InvalidActivity,
    TicketDelete,
    day_of_partition,
    details_text,
    parse_activity,
    parse_ticket_delete,
)
from resources.queues import BatchOutcome, Message

DEFAULT_RETENTION_DAYS = 90
DEFAULT_DAYS_AHEAD = 3


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
    deleted = conn.execute(
        """
        delete from raw.activities a
        using (select distinct * from unnest(%s::text[], %s::bigint[]) as t(tenant_id, ticket_id))
            as d
        where a.tenant_id = d.tenant_id and a.ticket_id = d.ticket_id
        returning a.occurred_at, a.actor_type
        """,
        (tenants, tickets),
    ).fetchall()
    mark_export_days_changed(conn, [when for when, actor in deleted if actor == "user"])
    return len(deleted)


# --- what the daily export wrote, and late changes ---------------------------------------------


def mark_export_days_changed(conn: psycopg.Connection, moments: Sequence[datetime]) -> None:
    """Record that the user activities of these moments' UTC days changed (in the caller's
    transaction). A day exported before the change is then re-exported (`changed_export_days`).

    The row lock orders this against a running export of the day: an export that started first
    holds the row until it commits, so the change is stamped after it and the day is exported
    again; a change that committed first is in the export's snapshot.
    """
    days = sorted({m.astimezone(UTC).date() for m in moments})
    if days:
        conn.execute(
            """
            insert into control.activity_export_days (day, changed_at)
            select d, clock_timestamp() from unnest(%s::date[]) as d
            on conflict (day) do update set changed_at = excluded.changed_at
            """,
            (days,),
        )


def begin_day_export(conn: psycopg.Connection, day: date) -> set[str]:
    """Stamp the start of `day`'s export (before its COPY, in the same transaction) and return
    the tenants the previous export of the day wrote files for."""
    row = conn.execute(
        """
        with previous as (select tenants from control.activity_export_days where day = %(day)s)
        insert into control.activity_export_days (day, exported_at) values (%(day)s, now())
        on conflict (day) do update set exported_at = now()
        returning (select tenants from previous)
        """,
        {"day": day},
    ).fetchone()
    return set(row[0] or ())


def finish_day_export(conn: psycopg.Connection, day: date, tenants: Sequence[str]) -> None:
    conn.execute(
        "update control.activity_export_days set tenants = %s where day = %s",
        (sorted(tenants), day),
    )


def changed_export_days(conn: psycopg.Connection, limit: int = 60) -> list[tuple[date, datetime]]:
    """Days exported before their user activities last changed, oldest first, with the time of
    that change (what makes a re-export request unique)."""
    return conn.execute(
        """
        select day, changed_at from control.activity_export_days
        where exported_at is not null and changed_at > exported_at
        order by day limit %s
        """,
        (limit,),
    ).fetchall()


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


def ticket_timeline_page(
    conn: psycopg.Connection,
    tenant_id: str,
    ticket_id: int,
    *,
    after: tuple[datetime, str] | None = None,
    limit: int = 100,
) -> list[TimelineEntry]:
    """One page of a ticket's timeline, oldest first, after the (occurred_at, activity_id) of
    the previous page's last entry: keyset pagination, so pages never skip or repeat entries
    while activities arrive."""
    if after is None:
        rows = conn.execute(
            """
            select occurred_at, activity_id, actor_type, actor_id, action, category, details
            from raw.activities where tenant_id = %s and ticket_id = %s
            order by occurred_at, activity_id limit %s
            """,
            (tenant_id, ticket_id, limit),
        ).fetchall()
    else:
        rows = conn.execute(
            """
            select occurred_at, activity_id, actor_type, actor_id, action, category, details
            from raw.activities
            where tenant_id = %s and ticket_id = %s and (occurred_at, activity_id) > (%s, %s)
            order by occurred_at, activity_id limit %s
            """,
            (tenant_id, ticket_id, after[0], after[1], limit),
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

    cutoff = retention_cutoff(today, retention_days)

    def apply(messages: list[Message]) -> BatchOutcome:
        rejected: dict[str, str] = {}
        valid = []
        now = datetime.now(UTC)  # one clock reading per batch bounds every `occurred_at`
        for message in messages:
            try:
                activity = parse_activity(message.body, now=now, from_json=True)
            except InvalidActivity as exc:
                rejected[message.receipt] = f"invalid activity: {exc}"
                continue
            if activity.day < cutoff:  # retention has dropped (or would drop at once) its day
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


def ensure_partitions(conn: psycopg.Connection, days: Sequence[date]) -> int:
    """Create the day partitions among `days` that are missing; returns how many were created."""
    if not days:
        return 0
    row = conn.execute(
        "select count(*) filter (where raw.ensure_activity_partition(d)) "
        "from unnest(%s::date[]) as d",
        (sorted(set(days)),),
    ).fetchone()
    return int(row[0])


_STAGING_DDL = """
create temp table if not exists activities_staging (
    ord         integer,
    activity_id text,
    occurred_at timestamptz,
    tenant_id   text,
    ticket_id   bigint,
    actor_type  text,
    actor_id    text,
    action      text,
    category    text,
    details     jsonb
) on commit drop
"""

# One statement: dedupe the batch, drop activities of destroyed tickets, claim the ids in the
# ledger, insert only the claimed ones (the ON CONFLICT there is a second guard only), and mark
# the days of the user activities inserted as changed (`mark_export_days_changed`, in day order).
_INSERT_SQL = """
with batch as (
    select distinct on (s.activity_id) s.*
    from activities_staging s
    where not exists (
        select 1 from raw.activity_deleted_tickets d
        where d.tenant_id = s.tenant_id and d.ticket_id = s.ticket_id
    )
    order by s.activity_id, s.ord
), claimed as (
    insert into raw.activity_ids (activity_id, occurred_at)
    select activity_id, occurred_at from batch
    on conflict (activity_id) do nothing
    returning activity_id
), inserted as (
    insert into raw.activities
        (activity_id, occurred_at, tenant_id, ticket_id, actor_type, actor_id, action, category,
         details)
    select b.activity_id, b.occurred_at, b.tenant_id, b.ticket_id, b.actor_type, b.actor_id,
           b.action, b.category, b.details
    from batch b join claimed c using (activity_id)
    on conflict do nothing
    returning occurred_at, actor_type
), marked as (
    insert into control.activity_export_days (day, changed_at)
    select day, clock_timestamp()
    from (select distinct (occurred_at at time zone 'UTC')::date as day
          from inserted where actor_type = 'user' order by 1) as days
    on conflict (day) do update set changed_at = excluded.changed_at
)
select count(*) from inserted
"""


def insert_activities(conn: psycopg.Connection, activities: Sequence[Activity]) -> int:
    """Insert activities idempotently; returns the rows inserted.

    A repeated activity_id (within the batch or already stored) has no second effect; an
    activity of a ticket destroyed earlier is not stored. Missing day partitions are created.
    Runs in the caller's transaction and does not commit (on an autocommit connection it runs
    as one transaction of its own).
    """
    if not activities:
        return 0
    if conn.autocommit:  # the staging table lives for one transaction: give it one
        with conn.transaction():
            return _insert(conn, activities)
    return _insert(conn, activities)


def _insert(conn: psycopg.Connection, activities: Sequence[Activity]) -> int:
    ensure_partitions(conn, [a.day for a in activities])
    with conn.cursor() as cur:
        cur.execute(_STAGING_DDL)
        cur.execute("truncate activities_staging")
        with cur.copy(
            "copy activities_staging (ord, activity_id, occurred_at, tenant_id, ticket_id, "
            "actor_type, actor_id, action, category, details) from stdin"
        ) as copy:
            for ord_, a in enumerate(activities):
                copy.write_row(
                    (
                        ord_,
                        a.activity_id,
                        a.occurred_at,
                        a.tenant_id,
                        a.ticket_id,
                        a.actor_type,
                        a.actor_id,
                        a.action,
                        a.category,
                        a.details_json or details_text(a.details),
                    )
                )
        cur.execute(_INSERT_SQL)
        (inserted,) = cur.fetchone()
    return int(inserted)

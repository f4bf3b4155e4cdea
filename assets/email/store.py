"""Email delivery in the warehouse: sent notifications, delivery receipts, pod routing, template
statistics and retention. Plain functions over a psycopg connection; each runs in the caller's
transaction unless it says otherwise. The rules themselves are in `assets.email.rules`.

Orphans: a receipt whose notification is not there yet is retried by the drain loop (the
`email_sent` message may come later); on its last receive it is stored in `raw.delivery_events`
with `orphan = true` instead of being dropped. When the notification arrives later, its orphans
are *adopted*: applied in the order they were received, exactly as if they had come after it. A
per-reference advisory lock makes "store an orphan" and "insert the notification, then adopt"
mutually exclusive, so no orphan is missed by a concurrent adoption.

Template statistics of today read `raw.notification_counts` (migration 0302): triggers on the
notification tables append every change to `raw.notification_count_changes`, and the writers
here fold them into the counts at the end of their batch (`fold_notification_counts`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from assets.activities.rules import parse_activity
from assets.activities.store import insert_activities
from assets.email.rules import (
    DEFAULT_RETENTION_DAYS,
    FAILURE_STATUSES,
    MASK_ADDRESS_SQL,
    Receipt,
    SentNotification,
    day_bounds,
    failure_activity_id,
    is_internal_sender,
    local_day,
    stats_days,
    status_transitions,
)

FAILURE_ACTION = "email_delivery_failed"
FAILURE_ACTOR_ID = "email-delivery"


# --- sent notifications ------------------------------------------------------------------------


def _reference_lock(conn: psycopg.Connection, provider: str, reference: str) -> None:
    conn.execute(
        "select pg_advisory_xact_lock(hashtextextended(%s, 3003))", (f"{provider}:{reference}",)
    )


class SentResults(NamedTuple):
    inserted: int
    adopted: int  # orphan receipts applied
    conflicts: list[int]  # indexes whose provider reference belongs to another notification


def store_sent_notifications(
    conn: psycopg.Connection, notifications: Sequence[SentNotification]
) -> SentResults:
    """Insert new notifications with status `sending` (a repeat has no effect) and adopt their
    orphan receipts. A different notification with the same provider reference is a conflict,
    reported (not stored) so the caller can dead-letter it."""
    inserted = adopted = 0
    conflicts: list[int] = []
    for index, n in enumerate(notifications):
        row = conn.execute(
            """
            insert into raw.notifications
                (notification_id, tenant_id, ticket_id, template_id, recipient, provider,
                 provider_reference, status, created_at, sent_at, status_updated_at, custom_params)
            values (%s, %s, %s, %s, %s, %s, %s, 'sending', %s, %s, %s, %s)
            on conflict do nothing
            returning notification_id
            """,
            (
                n.notification_id,
                n.tenant_id,
                n.ticket_id,
                n.template_id,
                n.recipient,
                n.provider,
                n.provider_reference,
                n.created_at,
                n.sent_at,
                n.sent_at,
                Jsonb(n.custom_params),
            ),
        ).fetchone()
        if row is None:
            same = conn.execute(
                "select 1 from raw.notifications where notification_id = %s "
                "and provider = %s and provider_reference = %s",
                (n.notification_id, n.provider, n.provider_reference),
            ).fetchone()
            if same is None:
                conflicts.append(index)
            continue
        inserted += 1
        _reference_lock(conn, n.provider, n.provider_reference)
        orphans = conn.execute(
            """
            select delivery_event_id, outcome, occurred_at, reason
            from raw.delivery_events
            where provider = %s and provider_reference = %s and orphan
              and (tenant_id is null or tenant_id = %s)
            order by delivery_event_id
            """,
            (n.provider, n.provider_reference, n.tenant_id),
        ).fetchall()
        for event_pk, outcome, occurred_at, reason in orphans:
            conn.execute(
                "update raw.delivery_events set orphan = false, notification_id = %s, "
                "tenant_id = %s where delivery_event_id = %s",
                (n.notification_id, n.tenant_id, event_pk),
            )
            new_status = _apply_status(
                conn, event_pk, n.notification_id, outcome, occurred_at, reason
            )
            if new_status in FAILURE_STATUSES:
                _maybe_failure_activity(conn, event_pk)
            adopted += 1
    fold_notification_counts(conn)
    return SentResults(inserted, adopted, conflicts)


# --- receipts ----------------------------------------------------------------------------------


@dataclass
class ReceiptResults:
    applied: int = 0  # stored, and matched a notification
    status_changes: int = 0
    duplicates: int = 0
    ignored: int = 0  # internal sender
    orphaned: int = 0
    missing: list[int] = field(default_factory=list)  # indexes to retry later
    failure_activities: int = 0


def _apply_status(
    conn: psycopg.Connection,
    event_pk: int,
    notification_id: str,
    outcome: str,
    occurred_at: datetime,
    reason: str | None,
) -> str | None:
    """Move the notification's status if the rules allow; the WHERE is the rule, so two drains
    racing on one notification cannot both change it."""
    transitions = status_transitions(outcome)
    if not transitions:
        return None
    row = conn.execute(
        """
        update raw.notifications
        set status = %(transitions)s::jsonb ->> status, status_reason = %(reason)s,
            status_updated_at = %(occurred_at)s
        where notification_id = %(notification_id)s and status = any(%(allowed)s)
        returning status
        """,
        {
            "transitions": Jsonb(transitions),
            "reason": reason,
            "occurred_at": occurred_at,
            "notification_id": notification_id,
            "allowed": list(transitions),
        },
    ).fetchone()
    if row is None:
        return None
    (new_status,) = row
    conn.execute(
        "update raw.delivery_events set status_applied = %s where delivery_event_id = %s",
        (new_status, event_pk),
    )
    return new_status


def _maybe_failure_activity(conn: psycopg.Connection, event_pk: int) -> int:
    """The failure activity on the ticket timeline, when this event set a failure status."""
    row = conn.execute(
        """
        select e.provider, e.provider_event_id, e.status_applied, e.reason, e.occurred_at,
               e.event_type, n.tenant_id, n.ticket_id, n.recipient, n.notification_id,
               n.template_id
        from raw.delivery_events e join raw.notifications n using (notification_id)
        where e.delivery_event_id = %s
        """,
        (event_pk,),
    ).fetchone()
    if row is None:
        return 0
    (provider, event_id, status, reason, occurred_at, event_type, tenant, ticket, recipient,
     notification_id, template_id) = row  # fmt: skip
    if status not in FAILURE_STATUSES or ticket is None:
        return 0
    activity = parse_activity(
        {
            "activity_id": failure_activity_id(provider, event_id),
            "tenant_id": tenant,
            "ticket_id": ticket,
            "actor_type": "system",
            "actor_id": FAILURE_ACTOR_ID,
            "action": FAILURE_ACTION,
            "occurred_at": occurred_at.isoformat(),
            "details": {
                "provider": provider,
                "recipient": recipient,
                "reason": reason or event_type,
                "status": status,
                "notification_id": notification_id,
                "template_id": template_id,
            },
        },
        now=max(datetime.now(occurred_at.tzinfo), occurred_at),
    )
    return insert_activities(conn, [activity])


def apply_receipts(
    conn: psycopg.Connection,
    receipts: Sequence[Receipt],
    *,
    last_attempt: Iterable[bool],
    internal_senders: Sequence[str] = (),
) -> ReceiptResults:
    """Apply receipts in order: store each provider event once, change the notification's status
    where the rules allow, and write a failure activity. A receipt without its notification is
    reported in `missing` (retry later), or stored as an orphan on its last attempt."""
    results = ReceiptResults()
    for index, (receipt, last) in enumerate(zip(receipts, last_attempt, strict=True)):
        if is_internal_sender(receipt.sender, internal_senders):
            results.ignored += 1
            continue
        found, event_pk, new_status = _store_and_apply(conn, receipt)
        if not found:
            _reference_lock(conn, receipt.provider, receipt.provider_reference)
            found, event_pk, new_status = _store_and_apply(conn, receipt)
        if not found:
            if _event_stored(conn, receipt):
                results.duplicates += 1
            elif last:
                _store_event(conn, receipt, None, orphan=True)
                results.orphaned += 1
            else:
                results.missing.append(index)
            continue
        if event_pk is None:
            results.duplicates += 1
            continue
        results.applied += 1
        if new_status is not None:
            results.status_changes += 1
            if new_status in FAILURE_STATUSES:
                results.failure_activities += _maybe_failure_activity(conn, event_pk)
    fold_notification_counts(conn)
    return results


# One round trip per receipt: lock the notification (so receipts of one notification apply one
# after another even across drains), store the event unless it is a duplicate, and move the
# status when the rules allow. The UPDATE's WHERE repeats the rule, so it can never apply twice.
_STORE_AND_APPLY_SQL = """
with target as (
    select notification_id, tenant_id, status from raw.notifications
    where provider = %(provider)s and provider_reference = %(reference)s
      and (%(tenant)s::text is null or tenant_id = %(tenant)s::text)
    for update
), stored as (
    insert into raw.delivery_events
        (provider, provider_event_id, provider_reference, tenant_id, notification_id,
         event_type, outcome, severity, reason, occurred_at, orphan, payload, status_applied)
    select %(provider)s, %(event_id)s, %(reference)s, t.tenant_id, t.notification_id,
           %(event_type)s, %(outcome)s, %(severity)s, %(reason)s, %(occurred_at)s, false,
           %(payload)s,
           %(transitions)s::jsonb ->> t.status
    from target t
    on conflict (provider, provider_event_id) do nothing
    returning delivery_event_id, notification_id, status_applied
), changed as (
    update raw.notifications n
    set status = s.status_applied, status_reason = %(reason)s,
        status_updated_at = %(occurred_at)s
    from stored s
    where n.notification_id = s.notification_id and s.status_applied is not null
      and n.status = any(%(allowed)s::text[])
    returning n.notification_id
)
select t.notification_id, s.delivery_event_id, s.status_applied,
       (select count(*) from changed)
from target t left join stored s on true
"""


def _store_and_apply(
    conn: psycopg.Connection, receipt: Receipt
) -> tuple[bool, int | None, str | None]:
    """(notification found, stored event id or None for a duplicate, the status it set)."""
    row = conn.execute(
        _STORE_AND_APPLY_SQL,
        {
            "provider": receipt.provider,
            "reference": receipt.provider_reference,
            "tenant": receipt.tenant_id,
            "event_id": receipt.provider_event_id,
            "event_type": receipt.event_type,
            "outcome": receipt.outcome,
            "severity": receipt.severity,
            "reason": receipt.reason,
            "occurred_at": receipt.occurred_at,
            "payload": Jsonb(receipt.payload),
            "allowed": list(status_transitions(receipt.outcome)),
            "transitions": Jsonb(status_transitions(receipt.outcome)),
        },
    ).fetchone()
    if row is None:
        return False, None, None
    _, event_pk, new_status, changed = row
    if (new_status is not None) != bool(changed):
        # cannot happen while the row lock holds; refuse rather than record a wrong status
        raise RuntimeError(f"status of {receipt.provider_reference} changed under a receipt")
    return True, event_pk, new_status


def _event_stored(conn: psycopg.Connection, receipt: Receipt) -> bool:
    row = conn.execute(
        "select 1 from raw.delivery_events where provider = %s and provider_event_id = %s",
        (receipt.provider, receipt.provider_event_id),
    ).fetchone()
    return row is not None


def _store_event(
    conn: psycopg.Connection, receipt: Receipt, notification_id: str | None, *, orphan: bool
) -> int | None:
    """Insert the provider event once; None when it was stored before (a duplicate)."""
    row = conn.execute(
        """
        insert into raw.delivery_events
            (provider, provider_event_id, provider_reference, tenant_id, notification_id,
             event_type, outcome, severity, reason, occurred_at, orphan, payload)
        values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        on conflict (provider, provider_event_id) do nothing
        returning delivery_event_id
        """,
        (
            receipt.provider,
            receipt.provider_event_id,
            receipt.provider_reference,
            receipt.tenant_id,
            notification_id,
            receipt.event_type,
            receipt.outcome,
            receipt.severity,
            receipt.reason,
            receipt.occurred_at,
            orphan,
            Jsonb(receipt.payload),
        ),
    ).fetchone()
    return row[0] if row else None


# --- routing -----------------------------------------------------------------------------------


def pods_for_tenants(
    conn: psycopg.Connection, tenants: Iterable[str | None], default_pod: str
) -> dict[str | None, str]:
    """tenant -> pod from `control.email_tenant_pods`; unknown (or no) tenant -> `default_pod`."""
    wanted = sorted({t for t in tenants if t})
    found = dict(
        conn.execute(
            "select tenant_id, pod from control.email_tenant_pods where tenant_id = any(%s)",
            (wanted,),
        ).fetchall()
    )
    mapping: dict[str | None, str] = {t: found.get(t, default_pod) for t in wanted}
    mapping[None] = default_pod
    return mapping


def routed_pods(conn: psycopg.Connection) -> set[str]:
    """Pods tenants are routed to (`supportflow email pod`); none before the email migration."""
    if conn.execute("select to_regclass('control.email_tenant_pods')").fetchone()[0] is None:
        return set()
    return {row[0] for row in conn.execute("select distinct pod from control.email_tenant_pods")}


def set_tenant_pod(conn: psycopg.Connection, tenant_id: str, pod: str) -> None:
    conn.execute(
        "insert into control.email_tenant_pods (tenant_id, pod) values (%s, %s) "
        "on conflict (tenant_id) do update set pod = excluded.pod, updated_at = now()",
        (tenant_id, pod),
    )


# --- template statistics -----------------------------------------------------------------------

_COUNT_SQL = """
select tenant_id, template_id, status, count(*)::int
from (
    select tenant_id, template_id, status, sent_at from raw.notifications
    union all
    select tenant_id, template_id, status, sent_at from raw.notification_history
) n
where sent_at >= %(start)s and sent_at < %(end)s {tenant_filter}
group by tenant_id, template_id, status
order by tenant_id, template_id, status
"""


def count_sent(
    conn: psycopg.Connection, start: datetime, end: datetime, tenant_id: str | None = None
) -> list[tuple[str, str, str, int]]:
    """(tenant, template, status, notifications) sent in [start, end), by current status,
    counted from the notifications themselves (archived ones too)."""
    query = _COUNT_SQL.format(tenant_filter="and tenant_id = %(tenant)s" if tenant_id else "")
    return conn.execute(query, {"start": start, "end": end, "tenant": tenant_id}).fetchall()


def count_day(
    conn: psycopg.Connection, day: date, zone: ZoneInfo, tenant_id: str | None = None
) -> list[tuple[str, str, str, int]]:
    """(tenant, template, status, notifications) sent on `day` in `zone`, by current status.
    Counts archived notifications too, so re-computing a day after retention gives the same."""
    return count_sent(conn, *day_bounds(day, zone), tenant_id)


# raw.notification_counts (migration 0302): counts per UTC hour kept by triggers, plus the
# changes not folded in yet, read in one statement so a concurrent fold is seen whole or not.
_COUNTED_SQL = """
select template_id, status, sum(n)::int
from (
    select template_id, status, notification_count as n from raw.notification_counts
    where tenant_id = %(tenant)s and sent_hour >= %(start)s and sent_hour < %(end)s
    union all
    select template_id, status, delta from raw.notification_count_changes
    where tenant_id = %(tenant)s and sent_hour >= %(start)s and sent_hour < %(end)s
) c
group by template_id, status
having sum(n) <> 0
"""


def _hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def count_tenant_day(
    conn: psycopg.Connection, day: date, zone: ZoneInfo, tenant_id: str
) -> list[tuple[str, str, int]]:
    """(template, status, notifications) of one tenant sent on `day` in `zone`: what
    `count_day` counts, read from the hourly counts the triggers keep (about 24 rows per
    template and status however much was sent). In a zone whose midnight is not on a UTC hour
    the partial first and last hours are counted from the notifications."""
    start, end = day_bounds(day, zone)
    first_hour = _hour_floor(start)
    if first_hour < start:
        first_hour += timedelta(hours=1)
    last_hour = _hour_floor(end)
    counts: Counter[tuple[str, str]] = Counter()
    rows = conn.execute(
        _COUNTED_SQL, {"tenant": tenant_id, "start": first_hour, "end": last_hour}
    ).fetchall()
    for template, status, count in rows:
        counts[template, status] += count
    for low, high in ((start, first_hour), (last_hour, end)):
        if low < high:
            for _, template, status, count in count_sent(conn, low, high, tenant_id):
                counts[template, status] += count
    return sorted((template, status, n) for (template, status), n in counts.items() if n)


def fold_notification_counts(conn: psycopg.Connection) -> int:
    """Fold the pending changes into `raw.notification_counts` in the caller's transaction, so
    readers add few; returns the changes folded (0 at once while another transaction folds)."""
    return conn.execute("select raw.fold_notification_count_changes()").fetchone()[0]


def write_template_stats_day(conn: psycopg.Connection, day: date, zone: ZoneInfo) -> int:
    """Replace `analytics.template_stats_daily` rows of `day`; returns the rows written."""
    rows = count_day(conn, day, zone)
    conn.execute("delete from analytics.template_stats_daily where day = %s", (day,))
    with conn.cursor() as cur:
        cur.executemany(
            "insert into analytics.template_stats_daily "
            "(day, tenant_id, template_id, status, notification_count) "
            "values (%s, %s, %s, %s, %s)",
            [(day, *row) for row in rows],
        )
    return len(rows)


@dataclass(frozen=True)
class TemplateStat:
    day: date
    template_id: str
    status: str
    notification_count: int


def template_stats(
    conn: psycopg.Connection, tenant_id: str, days: int, zone: ZoneInfo, now: datetime
) -> list[TemplateStat]:
    """The dashboard's per-template counts for the last `days` (0..7) whole days plus today.

    Whole days come from `analytics.template_stats_daily` (the `template_stats` partitions);
    today is live, from the hourly counts the triggers keep (`count_tenant_day`).
    """
    today = local_day(now, zone)
    window = stats_days(today, days)
    rows = conn.execute(
        "select day, template_id, status, notification_count "
        "from analytics.template_stats_daily "
        "where tenant_id = %s and day >= %s and day < %s order by day, template_id, status",
        (tenant_id, window[0], today),
    ).fetchall()
    stats = [TemplateStat(*row) for row in rows]
    stats += [
        TemplateStat(today, template, status, count)
        for template, status, count in count_tenant_day(conn, today, zone, tenant_id)
    ]
    return stats


# --- retention ---------------------------------------------------------------------------------

# `{masked}` stands for the masked recipient (`MASK_ADDRESS_SQL`, a constant expression).
_RETENTION_BATCH_TEMPLATE = """
with doomed as (
    select n.notification_id, n.tenant_id, n.ticket_id, n.recipient
    from raw.notifications n
    left join control.notification_retention r on r.tenant_id = n.tenant_id
    where n.sent_at < ((%(today)s::date - coalesce(r.retention_days, %(default_days)s))::timestamp
                       at time zone %(zone)s)
    order by n.sent_at
    limit %(batch)s
    for update of n skip locked
), archived as (
    insert into raw.notification_history
        (notification_id, tenant_id, ticket_id, template_id, provider, provider_reference,
         status, created_at, sent_at, status_updated_at)
    select n.notification_id, n.tenant_id, n.ticket_id, n.template_id, n.provider,
           n.provider_reference, n.status, n.created_at, n.sent_at, n.status_updated_at
    from raw.notifications n join doomed using (notification_id)
    on conflict (notification_id) do update
        set status = excluded.status, status_updated_at = excluded.status_updated_at,
            archived_at = now()
    returning notification_id
), events as (
    -- the provider payloads carry the recipient: they go with the notification
    delete from raw.delivery_events e using doomed d where e.notification_id = d.notification_id
), masked as (
    -- the failure activities on the ticket's timeline keep a masked address, nothing else
    -- personal (the provider's reason may quote the address)
    update raw.activities a
    set details = a.details || jsonb_build_object('recipient', {masked})
        || case when a.details ? 'reason'
                then jsonb_build_object(
                    'reason', replace(a.details->>'reason', d.recipient, {masked}))
                else '{}'::jsonb end
    from doomed d
    where a.tenant_id = d.tenant_id and a.ticket_id = d.ticket_id
      and a.action = %(failure_action)s
      and a.details->>'notification_id' = d.notification_id
      and a.details->>'recipient' = d.recipient
    returning 1
), deleted as (
    delete from raw.notifications n using archived a where n.notification_id = a.notification_id
    returning 1
)
select (select count(*) from deleted), (select count(*) from masked)
"""
_RETENTION_BATCH_SQL = _RETENTION_BATCH_TEMPLATE.replace(
    "{masked}", MASK_ADDRESS_SQL.format(column="d.recipient")
)


@dataclass
class RetentionReport:
    archived: int = 0
    activities_masked: int = 0
    batches: int = 0
    orphans_deleted: int = 0
    tokens_pruned: int = 0


def run_retention(
    connection: Callable[[], AbstractContextManager[psycopg.Connection]],
    now: datetime,
    zone: ZoneInfo,
    *,
    default_days: int = DEFAULT_RETENTION_DAYS,
    batch_size: int = 1000,
) -> RetentionReport:
    """Move notifications older than the retention (whole days in `zone`, per-tenant override)
    to `raw.notification_history` without personal fields, then delete them, and mask the
    recipient in their failure activities; one transaction per batch, so a killed run keeps what
    it finished and a re-run continues."""
    today = local_day(now, zone)
    params = {
        "today": today,
        "default_days": default_days,
        "zone": zone.key,
        "batch": batch_size,
        "failure_action": FAILURE_ACTION,
    }
    report = RetentionReport()
    while True:
        with connection() as conn:
            moved, masked = conn.execute(_RETENTION_BATCH_SQL, params).fetchone()
        if moved <= 0:
            break
        report.archived += moved
        report.activities_masked += masked
        report.batches += 1
    oldest_kept = day_bounds(today - timedelta(days=default_days), zone)[0]
    with connection() as conn:
        report.orphans_deleted = conn.execute(
            "delete from raw.delivery_events where orphan and received_at < %s", (oldest_kept,)
        ).rowcount
        report.tokens_pruned = conn.execute(
            "delete from control.mailgun_seen_tokens where seen_at < now() - interval '1 day'"
        ).rowcount
        fold_notification_counts(conn)
    return report


def set_retention_days(conn: psycopg.Connection, tenant_id: str, days: int) -> None:
    conn.execute(
        "insert into control.notification_retention (tenant_id, retention_days) values (%s, %s) "
        "on conflict (tenant_id) do update set retention_days = excluded.retention_days, "
        "updated_at = now()",
        (tenant_id, days),
    )

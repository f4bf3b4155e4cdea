"""Production-sized state for the queue and activities benchmarks, filled before any timing.

A production warehouse is not empty when a drain runs: `control.queue_acks` holds every id
acknowledged in the last `ACK_LEDGER_DAYS` (14) days, and `raw.activity_ids` with
`raw.activities` hold what retention keeps. The benchmarks fill that state in SQL once, keep it
across their rounds (never truncated), and document its size:

- `DAILY_ACTIVITIES` a day, 250,000 (a mid-size helpdesk: about 170 activities a minute, day and
  night); so the acknowledgement ledger of queue `activities` holds 14 x 250,000 = 3.5 million ids;
- `raw.activities` and its id ledger `raw.activity_ids` hold the same 14 days (3.5 million rows).
  Left out: the other 76 days of the default 90-day retention. Their partitions are created
  (empty), so partition routing and planning see all of them; their rows would only deepen the
  id ledger's b-tree (one more level) and take memory the cache could use.

Ids are `act-<12-digit sequence>`, increasing with time the way a producer's sequence (e.g.
Zendesk's event ids) does; the benchmarks' new ids continue the sequence after the filled ones.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from resources.queues import ACK_LEDGER_DAYS

DAILY_ACTIVITIES = 250_000
RETENTION_DAYS = 90


def activity_id(sequence: int) -> str:
    """The benchmarks' activity id of a sequence number (prefilled ids come first)."""
    return f"act-{sequence:012d}"


def fill_acknowledged_ids(
    db: Any, queue: str, per_day: int = DAILY_ACTIVITIES, days: int = ACK_LEDGER_DAYS
) -> int:
    """Fill `control.queue_acks` with `days` of acknowledged ids of `queue` (sequences
    0 .. per_day * days - 1, acked_at spread over the days, oldest first). Returns the count."""
    total = per_day * days
    db.execute(
        """
        insert into control.queue_acks (queue, dedup_id, acked_at)
        select %(queue)s, 'act-' || lpad(n::text, 12, '0'),
               now() - make_interval(secs => (%(total)s - n) * %(step)s)
        from generate_series(0, %(total)s - 1) as n
        """,
        {"queue": queue, "total": total, "step": days * 86_400.0 / total},
    )
    db.execute("analyze control.queue_acks")
    return total


def fill_activities(
    db: Any, today: date, per_day: int = DAILY_ACTIVITIES, days: int = ACK_LEDGER_DAYS
) -> int:
    """Fill `raw.activities` and `raw.activity_ids` with `days` x `per_day` activities ending
    now (sequences 0 .. per_day * days - 1, the same ids `fill_acknowledged_ids` acknowledges),
    and create the partitions of the whole retention period. Returns the rows filled."""
    total = per_day * days
    db.execute(
        "select raw.ensure_activity_partition(d::date) from generate_series("
        "%s::date - %s, %s::date + 3, interval '1 day') as d",
        (today, RETENTION_DAYS, today),
    )
    db.execute(
        """
        insert into raw.activities
            (activity_id, occurred_at, tenant_id, ticket_id, actor_type, actor_id, action,
             category, details)
        select 'act-' || lpad(n::text, 12, '0'),
               now() - make_interval(secs => (%(total)s - n) * %(step)s),
               'tenant-' || (n %% 20),
               1 + n %% 50000,
               case when n %% 10 = 0 then 'system' else 'user' end,
               'agent-' || (n %% 40),
               (array['reply','note','status_changed','assigned','priority_changed'])[1 + n %% 5],
               case when n %% 10 = 0 then null
                    else (array['conversation','conversation','status','assignment',
                                'property'])[1 + n %% 5] end,
               jsonb_build_object('changes', jsonb_build_object('status',
                   jsonb_build_array('open', 'pending')))
        from generate_series(0, %(total)s - 1) as n
        """,
        {"total": total, "step": days * 86_400.0 / total},
    )
    db.execute(
        "insert into raw.activity_ids (activity_id, occurred_at) "
        "select activity_id, occurred_at from raw.activities"
    )
    # A few destroyed tickets, as production has: the insert looks every activity up there.
    db.execute(
        "insert into raw.activity_deleted_tickets (tenant_id, ticket_id) "
        "select 'tenant-' || (n % 20), 100000 + n from generate_series(1, 2000) as n"
    )
    db.execute("analyze raw.activities, raw.activity_ids, raw.activity_deleted_tickets")
    return total

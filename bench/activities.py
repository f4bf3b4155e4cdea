"""Benchmark of the activities domain: prints figures, never passes or fails on time.

1. queue -> table: activities per second through the real drain (`resources.queues.drain` on the
   postgres queue backend: receive with lease and dedup check, validation, COPY into staging, one
   INSERT ... ON CONFLICT per batch, commit, ack) for `--events` events a round, batches of 1000
   (the drain job's default). The warehouse holds production-sized state first and keeps it across
   rounds (`bench/production_state.py`: 14 days of acknowledged ids, 3.5 million, in
   `control.queue_acks`; 14 days of activities with their id ledger; 90 days of partitions); each
   round's events are new ids continuing the producer's sequence, over the last 24 hours (two
   day partitions). Timed: the drain from its first receive until the queue is empty. Not timed:
   publishing (printed apart), the state fill. Left out: Dagster's run start-up around the drain,
   and other runs writing to the warehouse meanwhile.
2. export: the time to write one day with 1,000,000 activities as per-tenant Parquet + CSV,
   beside the raw `COPY ... TO STDOUT` of the same rows (same query, bytes discarded).

Runs its own embedded PostgreSQL in a temporary SUPPORTFLOW_HOME. Median of `--rounds` rounds.

    .venv/bin/python bench/activities.py [--events 200000] [--export-rows 1000000] [--rounds 3]
        [--daily-activities 250000] [--skip-export]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.activities.export import day_bounds, export_copy_query, export_day  # noqa: E402
from assets.activities.rules import activity_key  # noqa: E402
from assets.activities.store import IngestTally, activity_batch_applier  # noqa: E402
from bench.production_state import (  # noqa: E402
    DAILY_ACTIVITIES,
    activity_id,
    fill_acknowledged_ids,
    fill_activities,
)
from resources.queues import drain  # noqa: E402
from resources.runtime import build_resources, warehouse_url  # noqa: E402
from resources.settings import Settings  # noqa: E402
from resources.storage import ExportStorage  # noqa: E402
from resources.warehouse import close_pools, stop_embedded_server  # noqa: E402

ACTIONS = ["reply", "note", "status_changed", "assigned", "priority_changed", "tags_added"]


def events(count: int, today: datetime, first: int) -> list[dict]:
    """`count` new activities with the sequence ids `first`, `first + 1` ..."""
    return [
        {
            "type": "activity",
            "activity_id": activity_id(first + n),
            "tenant_id": f"tenant-{n % 20}",
            "ticket_id": 1 + n % 5000,
            "actor_type": "system" if n % 10 == 0 else "user",
            "actor_id": f"agent-{n % 40}",
            "action": ACTIONS[n % len(ACTIONS)],
            "occurred_at": (today - timedelta(seconds=n % 86_000)).isoformat(),
            "changes": {"status": ["open", "pending"]},
        }
        for n in range(count)
    ]


def bench_ingest(resources: dict, db, count: int, rounds: int, daily: int) -> None:
    queues, warehouse = resources["queues"], resources["warehouse"]
    now = datetime.now(UTC)
    started = time.perf_counter()
    filled = fill_acknowledged_ids(db, "activities", per_day=daily)
    fill_activities(db, now.date(), per_day=daily)
    print(
        f"state: {filled:,} acknowledged ids, {filled:,} activities and ids "
        f"({daily:,} a day, 14 days), filled in {time.perf_counter() - started:,.0f} s"
    )
    rates, publish = [], []
    for round_ in range(rounds):
        bodies = events(count, now, filled + round_ * count)
        started = time.perf_counter()
        queues.send("activities", bodies, dedup_key=activity_key)
        publish.append(count / (time.perf_counter() - started))
        tally = IngestTally()
        started = time.perf_counter()
        report = drain(
            queues,
            "activities",
            activity_batch_applier(warehouse.connection, tally, today=now.date()),
            batch_size=1000,
            max_seconds=3600,
        )
        elapsed = time.perf_counter() - started
        assert tally.inserted == count and report.applied == count, (tally, report)
        rates.append(count / elapsed)
    print(f"queue -> raw.activities, {count:,} events, batches of 1000, {rounds} rounds")
    print(f"  publish (COPY into queue):  {statistics.median(publish):>10,.0f} events/s")
    print(f"  drain (receive+insert+ack): {statistics.median(rates):>10,.0f} activities/s")
    print(f"  per round: {', '.join(f'{r:,.0f}' for r in rates)}")


def fill_export_day(db, rows: int, day) -> None:
    db.execute(
        "truncate raw.activities, raw.activity_ids, control.queue_messages, control.queue_acks"
    )
    db.execute("select raw.ensure_activity_partition(%s)", (day,))
    start, _ = day_bounds(day)
    db.execute(
        """
        insert into raw.activities
            (activity_id, occurred_at, tenant_id, ticket_id, actor_type, actor_id, action,
             category, details)
        select 'x' || n,
               %(start)s + make_interval(secs => (n %% 86400) + (n %% 1000) / 1000.0),
               'tenant-' || (n %% 47),
               1 + n %% 20000,
               case when n %% 10 = 0 then 'system' else 'user' end,
               'agent-' || (n %% 40),
               (array['reply','note','status_changed','assigned','priority_changed'])[1 + n %% 5],
               case when n %% 10 = 0 then null else 'conversation' end,
               jsonb_build_object('changes', jsonb_build_object('status',
                   jsonb_build_array('open', 'pending')))
        from generate_series(1, %(rows)s) as n
        """,
        {"start": start, "rows": rows},
    )
    db.execute("analyze raw.activities")


def bench_export(db, rows: int, rounds: int, home: Path) -> None:
    day = datetime.now(UTC).date() - timedelta(days=1)
    fill_export_day(db, rows, day)
    user_rows = db.execute(
        "select count(*) from raw.activities where actor_type = 'user'"
    ).fetchone()[0]
    query = export_copy_query(day)
    raw_times, export_times = [], []
    for round_ in range(rounds):
        started = time.perf_counter()
        size = 0
        with db.cursor() as cur, cur.copy(query) as copy:
            for chunk in copy:
                size += len(chunk)
        raw_times.append(time.perf_counter() - started)

        storage = ExportStorage(export_url=str(home / f"exports-{round_}"))
        started = time.perf_counter()
        exports = export_day(db, storage, day)
        export_times.append(time.perf_counter() - started)
        assert sum(e.rows for e in exports) == user_rows
        shutil.rmtree(home / f"exports-{round_}", ignore_errors=True)
    raw, full = statistics.median(raw_times), statistics.median(export_times)
    print(
        f"export of one day: {rows:,} activities ({user_rows:,} user), "
        f"{len(exports)} tenants, {rounds} rounds"
    )
    print(f"  raw COPY ... TO STDOUT (sorted CSV): {raw:>7.2f} s  ({size / 1e6:,.0f} MB)")
    print(
        f"  export_day (Parquet + CSV, atomic):  {full:>7.2f} s  ({user_rows / full:,.0f} rows/s)"
    )
    print(f"  ratio export / raw COPY:             {full / raw:>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--daily-activities", type=int, default=DAILY_ACTIVITIES)
    parser.add_argument("--skip-export", action="store_true")
    args = parser.parse_args()
    import psycopg

    home = Path(tempfile.mkdtemp(prefix="sf-bench-activities-"))
    settings = Settings.from_env(
        {"SUPPORTFLOW_HOME": str(home), "SUPPORTFLOW_QUEUE_BACKEND": "postgres"}
    )
    try:
        url = warehouse_url(settings)
        resources = build_resources(settings, for_dagster=False)
        with psycopg.connect(url, autocommit=True) as db:
            bench_ingest(resources, db, args.events, args.rounds, args.daily_activities)
            if not args.skip_export:
                bench_export(db, args.export_rows, args.rounds, home)
    finally:
        close_pools()
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

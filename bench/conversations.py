"""Benchmark of the conversations domain: prints figures, never passes or fails on time.

1. queue -> tickets: messages per second through the real `messages` drain (postgres queue
   backend, validation, VADER sentiment, language of new tickets, origin/thread/ticket routing, the
   state machine, COPY of messages and tickets, derived properties, work-queue membership and
   counters, ack) for a sandbox stream of 200,000 messages over 20,000 authors (goal: 5,000/s);
2. closure sweep: the time of one sweep closing 100,000 due tickets that sit in work queues
   (goal: under 10 s).

Runs its own embedded PostgreSQL in a temporary SUPPORTFLOW_HOME.

    .venv/bin/python bench/conversations.py [--messages 200000] [--authors 20000]
        [--due-tickets 100000] [--batch-size 2000]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.conversations.store import (  # noqa: E402
    Engines,
    MessageTally,
    add_origin,
    counter_mismatches,
    message_batch_applier,
    refresh_membership,
    save_work_queue,
    sweep,
)
from resources.queues import BatchOutcome, drain  # noqa: E402
from resources.runtime import build_resources, warehouse_url  # noqa: E402
from resources.settings import Settings  # noqa: E402
from resources.warehouse import close_pools, stop_embedded_server  # noqa: E402
from sandbox.conversations import ConversationStream  # noqa: E402

QUEUES = {
    "new work": {"field": "state", "op": "in", "value": ["created", "working"]},
    "waiting": {"field": "state", "op": "in", "value": ["pending", "followup", "solved"]},
    "facebook": {"field": "channel", "op": "eq", "value": "facebook"},
    "angry": {
        "all": [
            {"field": "sentiment", "op": "lt", "value": -0.3},
            {"not": {"field": "state", "op": "eq", "value": "solved"}},
        ]
    },
    "vip": {"field": "tags", "op": "contains", "value": "vip"},
}


def bench_drain(resources: dict, db, messages: int, authors: int, batch_size: int) -> None:
    queues, warehouse = resources["queues"], resources["warehouse"]
    tenants = ("acme", "globex")
    stream = ConversationStream(
        seed=11,
        tenants=tenants,
        authors=authors,
        messages=messages,
        start=datetime.now(UTC) - timedelta(days=8),
        days=7,
    )
    started = time.perf_counter()
    bodies = stream.messages()
    truth = stream.truth()
    generated = time.perf_counter() - started
    # The stream and its model (millions of objects) are the bench's, not the drain's: frozen out
    # of the garbage collector, so that the drain's collections walk what a drain run holds.
    gc.collect()
    gc.freeze()
    with warehouse.connection() as conn:
        for origin in stream.origins():
            add_origin(conn, origin.tenant_id, origin.name, origin.channel, origin.ref)
        for tenant in tenants:
            for name, condition in QUEUES.items():
                save_work_queue(conn, tenant, name, condition=condition, create=True)
    # the queue alone (receive + ack, nothing applied): the ceiling of any drain on this machine
    queues.send("messages", bodies)
    started = time.perf_counter()
    drain(queues, "messages", lambda batch: BatchOutcome(), batch_size=batch_size,
          max_seconds=7200, skip_previously_acked=False)  # fmt: skip
    queue_only = time.perf_counter() - started
    db.execute("truncate control.queue_messages, control.queue_acks")

    started = time.perf_counter()
    queues.send("messages", bodies)
    published = time.perf_counter() - started

    engines = Engines.default()
    tally = MessageTally()
    started = time.perf_counter()
    report = drain(
        queues,
        "messages",
        message_batch_applier(warehouse.connection, tally, engines=engines),
        batch_size=batch_size,
        max_seconds=7200,
        skip_previously_acked=False,
    )
    elapsed = time.perf_counter() - started
    assert report.received == len(bodies) and report.rejected == 0, report
    assert tally.stored == len(truth.planned), (tally, len(truth.planned))
    tickets, members = db.execute(
        "select (select count(*) from raw.conversation_tickets), "
        "(select count(*) from raw.work_queue_members)"
    ).fetchone()
    with warehouse.connection() as conn:
        assert not counter_mismatches(conn)
    print(
        f"queue messages -> tickets: {len(bodies):,} bodies ({len(truth.planned):,} messages, "
        f"{truth.duplicates:,} duplicates, {len(truth.out_of_order):,} out of order, "
        f"{len(truth.removed) + len(truth.hidden) + len(truth.unhidden):,} moderated) "
        f"over {authors:,} authors, batches of {batch_size}"
    )
    print(f"  generate stream:            {generated:>8.1f} s")
    print(f"  publish (COPY into queue):  {len(bodies) / published:>10,.0f} bodies/s")
    print(f"  queue alone (receive+ack):  {len(bodies) / queue_only:>10,.0f} messages/s")
    print(
        f"  drain (receive+apply+ack):  {len(bodies) / elapsed:>10,.0f} messages/s  "
        f"({elapsed:.1f} s; {tickets:,} tickets, {members:,} queue memberships)"
    )
    print(
        f"  distinct customer texts scored: {engines.texts_scored:,} "
        "(each distinct text once per process)"
    )


def fill_due_tickets(db, count: int, now: datetime) -> None:
    """`count` solved tickets of tenant `sweep`, all past their closure period, in its queues."""
    tenant = "sweep"
    db.execute(
        "insert into control.origins (tenant_id, name, channel, ref) "
        "values (%s, 'Sweep WhatsApp', 'whatsapp', 'wa-sweep')",
        (tenant,),
    )
    origin_id = db.execute(
        "select origin_id from control.origins where tenant_id = %s", (tenant,)
    ).fetchone()[0]
    db.execute(
        """
        insert into raw.conversation_threads (tenant_id, origin_id, author_external_id)
        select %s, %s, 'author-' || n from generate_series(1, %s) as n
        """,
        (tenant, origin_id, count),
    )
    solved_at = now - timedelta(days=2)
    db.execute(
        """
        insert into raw.conversation_tickets
            (tenant_id, sequence, thread_id, origin_id, channel, author_external_id, state,
             solved_at, state_changed_at, created_at, visible_message_count)
        select %(tenant)s, row_number() over (order by thread_id), thread_id, origin_id,
               'whatsapp', author_external_id, 'solved', %(solved)s,
               %(solved)s - make_interval(secs => thread_id %% 3600), %(created)s, 1
        from raw.conversation_threads where tenant_id = %(tenant)s
        """,
        {"tenant": tenant, "solved": solved_at, "created": solved_at - timedelta(hours=3)},
    )
    with db.transaction():
        for name, condition in QUEUES.items():
            save_work_queue(db, tenant, name, condition=condition, create=True)
    ids = [
        row[0]
        for row in db.execute(
            "select ticket_id from raw.conversation_tickets where tenant_id = %s", (tenant,)
        )
    ]
    with db.transaction():
        for start in range(0, len(ids), 20_000):
            refresh_membership(db, ids[start : start + 20_000])
    db.execute("analyze")


def bench_sweep(resources: dict, db, count: int) -> None:
    now = datetime.now(UTC)
    fill_due_tickets(db, count, now)
    members = db.execute(
        "select count(*) from raw.work_queue_members where tenant_id = 'sweep'"
    ).fetchone()[0]
    started = time.perf_counter()
    with resources["warehouse"].connection() as conn:
        result = sweep(conn, now, 24 * 60)
    elapsed = time.perf_counter() - started
    assert result.closed >= count, result
    with resources["warehouse"].connection() as conn:
        assert not counter_mismatches(conn)
    print(
        f"closure sweep: {result.closed:,} due tickets closed ({members:,} queue memberships "
        f"removed, state log and counters in the same transaction)"
    )
    print(f"  one sweep:                  {elapsed:>8.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--authors", type=int, default=20_000)
    parser.add_argument("--due-tickets", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    args = parser.parse_args()
    import psycopg

    home = Path(tempfile.mkdtemp(prefix="sf-bench-conversations-"))
    settings = Settings.from_env(
        {"SUPPORTFLOW_HOME": str(home), "SUPPORTFLOW_QUEUE_BACKEND": "postgres"}
    )
    try:
        url = warehouse_url(settings)
        resources = build_resources(settings, for_dagster=False)
        with psycopg.connect(url, autocommit=True) as db:
            bench_drain(resources, db, args.messages, args.authors, args.batch_size)
            bench_sweep(resources, db, args.due_tickets)
    finally:
        close_pools()
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

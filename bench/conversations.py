"""Benchmark of the conversations domain: prints figures, never passes or fails on time.

1. queue -> tickets: messages per second through the real `messages` drain (postgres queue
   backend, validation, VADER sentiment, language of new tickets, origin/thread/ticket routing, the
   state machine, COPY of messages and tickets, derived properties, work-queue membership and
   counters, ack), applied in `--processes` worker processes split by tenant as the drain asset
   does for a backlog, for a sandbox stream of 200,000 messages over 20,000 authors (goal:
   5,000/s);
2. closure sweep: the time of one sweep closing 100,000 due tickets that sit in work queues
   (goal: under 10 s).

Runs its own embedded PostgreSQL in a temporary SUPPORTFLOW_HOME. Before any timing it stores a
production-sized history (`--history`, default 1,000,000 messages of another tenant on 100,000
closed tickets), so indexes are as deep as a running platform's; nothing is truncated between the
phases.

    .venv/bin/python bench/conversations.py [--messages 200000] [--authors 20000]
        [--due-tickets 100000] [--batch-size 2000] [--processes N] [--unique-texts]

The stream's customer texts come from phrase lists: about 85 % repeat a text seen before, and the
drain scores each distinct text once per process (as it does in production; each worker process
has its own cache). Real customers repeat
themselves less: `--unique-texts` gives every customer message a text of its own, so every one is
scored, which is the honest figure for a real channel. Left out: Dagster's run bookkeeping (the
drain is called directly), and the sensor's launch latency.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.conversations.store import (  # noqa: E402
    MessageTally,
    add_origin,
    counter_mismatches,
    message_drain_stages,
    refresh_membership,
    save_work_queue,
    sweep,
)
from resources.queues import BatchOutcome, drain  # noqa: E402
from resources.runtime import build_resources, warehouse_url  # noqa: E402
from resources.settings import Settings, default_drain_processes  # noqa: E402
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


def fill_history(db, messages: int, per_ticket: int = 10) -> None:
    """Production-sized state before any timing: tenant `history` with `messages` stored messages
    (`per_ticket` on each closed ticket, one ticket per thread, sent over the last 14 days), so
    the messages table's unique key, GIN and b-tree indexes and the tickets' and threads' tables
    are as deep as a running platform's when the timed drain writes into them (queue `messages`
    keeps no ledger of acknowledged ids: its consumer knows duplicates by (tenant, message_id))."""
    tickets = max(messages // per_ticket, 1)
    (origin_id,) = db.execute(
        "insert into control.origins (tenant_id, name, channel, ref) "
        "values ('history', 'History mail', 'mail', 'mail-history') returning origin_id"
    ).fetchone()
    db.execute(
        """
        insert into raw.conversation_threads (tenant_id, origin_id, author_external_id,
                                              last_message_at)
        select 'history', %s, 'customer-' || n, now() - interval '1 day'
        from generate_series(1, %s) as n
        """,
        (origin_id, tickets),
    )
    db.execute(
        """
        insert into raw.conversation_tickets
            (tenant_id, sequence, thread_id, origin_id, channel, author_external_id, state,
             closed_at, solved_at, state_changed_at, created_at, visible_message_count)
        select tenant_id, row_number() over (order by thread_id), thread_id, origin_id, 'mail',
               author_external_id, 'closed', now() - interval '1 day', now() - interval '2 days',
               now() - interval '1 day', now() - make_interval(days => (2 + thread_id %% 12)::int),
               %s
        from raw.conversation_threads where tenant_id = 'history'
        """,
        (per_ticket,),
    )
    db.execute(
        """
        insert into raw.conversation_messages
            (tenant_id, message_id, ticket_id, thread_id, origin_id, kind, author_external_id,
             text, sentiment_score, sent_at)
        select t.tenant_id, 'history-' || t.ticket_id || '-' || n, t.ticket_id, t.thread_id,
               t.origin_id, case when n %% 2 = 0 then 'agent_reply' else 'customer' end,
               t.author_external_id,
               (array['Hello, my order has not arrived yet, can you check please?',
                      'Thanks, that fixed it. Have a nice day!',
                      'I was charged twice for the same invoice this month.',
                      'Hallo, ich kann mich seit gestern nicht mehr anmelden.'])[1 + n %% 4]
                 || ' (' || t.ticket_id || '/' || n || ')',
               case when n %% 2 = 1 then 0.1 end,
               t.created_at + make_interval(mins => n * 7)
        from raw.conversation_tickets t, generate_series(1, %s) as n
        where t.tenant_id = 'history'
        """,
        (per_ticket,),
    )
    db.execute("vacuum analyze")


def make_texts_unique(bodies: list[dict]) -> int:
    """Give every customer message a text of its own (the stream's texts come from phrase lists,
    so about 85 % of customer texts repeat one seen before and are scored once per process;
    real customers repeat themselves far less). Returns how many texts were changed."""
    changed = 0
    for number, body in enumerate(bodies):
        if body.get("type", "message") == "message" and body.get("kind") == "customer":
            body["text"] = f"{body['text']} (ref {number})"
            changed += 1
    return changed


def bench_drain(
    resources: dict,
    db,
    messages: int,
    authors: int,
    batch_size: int,
    unique_texts: bool = False,
    history: int = 0,
    processes: int = 1,
) -> None:
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
    if unique_texts:
        make_texts_unique(bodies)
    generated = time.perf_counter() - started
    with warehouse.connection() as conn:
        for origin in stream.origins():
            add_origin(conn, origin.tenant_id, origin.name, origin.channel, origin.ref)
        for tenant in tenants:
            for name, condition in QUEUES.items():
                save_work_queue(conn, tenant, name, condition=condition, create=True)
    started = time.perf_counter()
    if history:
        fill_history(db, history)
    filled = time.perf_counter() - started
    # the queue alone (receive + ack, nothing applied): the ceiling of any drain on this machine
    queues.send("messages", bodies)
    started = time.perf_counter()
    drain(queues, "messages", lambda batch: BatchOutcome(), batch_size=batch_size,
          max_seconds=7200, skip_previously_acked=False, raw_bodies=True)  # fmt: skip
    queue_only = time.perf_counter() - started

    started = time.perf_counter()
    queues.send("messages", bodies)
    published = time.perf_counter() - started

    tally = MessageTally()
    started = time.perf_counter()
    # as the drain asset does: the lanes' worker processes start inside the timing
    with message_drain_stages(warehouse, tally, lanes=processes) as (prepare, apply):
        report = drain(
            queues,
            "messages",
            apply,
            prepare_batch=prepare,
            batch_size=batch_size,
            max_seconds=7200,
            skip_previously_acked=False,
            raw_bodies=True,
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
        + (", every customer text unique" if unique_texts else "")
        + f", applied in {processes} process(es)"
    )
    print(f"  generate stream:            {generated:>8.1f} s")
    if history:
        print(f"  history before timing:      {history:,} messages stored ({filled:.0f} s to fill)")
    print(f"  publish (COPY into queue):  {len(bodies) / published:>10,.0f} bodies/s")
    print(f"  queue alone (receive+ack):  {len(bodies) / queue_only:>10,.0f} messages/s")
    print(
        f"  drain (receive+apply+ack):  {len(bodies) / elapsed:>10,.0f} messages/s  "
        f"({elapsed:.1f} s; {tickets:,} tickets, {members:,} queue memberships)"
    )


def fill_due_tickets(db, count: int, now: datetime) -> None:
    """`count` solved tickets of tenant `sweep`, all past their closure period, in its queues."""
    tenant = "sweep"
    (origin_id,) = db.execute(
        "insert into control.origins (tenant_id, name, channel, ref) "
        "values (%s, 'Sweep WhatsApp', 'whatsapp', 'wa-sweep') returning origin_id",
        (tenant,),
    ).fetchone()
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
    parser.add_argument(
        "--history",
        type=int,
        default=1_000_000,
        help="messages already stored before the timed drain",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=default_drain_processes(),
        help="worker processes the drain applies in (SUPPORTFLOW_DRAIN_PROCESSES; default: "
        "one per core, at most 4); 1 applies in the drain's own process",
    )
    parser.add_argument(
        "--unique-texts",
        action="store_true",
        help="every customer message a text of its own (the stream repeats its phrases)",
    )
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
            bench_drain(
                resources,
                db,
                args.messages,
                args.authors,
                args.batch_size,
                unique_texts=args.unique_texts,
                history=args.history,
                processes=args.processes,
            )
            bench_sweep(resources, db, args.due_tickets)
    finally:
        close_pools()
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: messages per second through the postgres queue backend.

Each round sends N activity-shaped messages of about 500 bytes in batches, then receives them in
batches and acknowledges each batch (the drain loop's pattern, without a consumer and without the
drain's overlap of receiving with applying). Before the first round the acknowledgement ledger
holds production-sized state, kept across rounds (never truncated): 14 days of acknowledged ids of
queue `activities`, 3.5 million (`bench/production_state.py`), which every receive checks each
message against and every ack adds to. Each round's ids are new, continuing the producer's
sequence. Timed per phase: send, receive, ack. Not timed: the state fill. Prints per-phase
figures for every round and the median over the rounds. Starts its own embedded PostgreSQL under
a temporary SUPPORTFLOW_HOME and removes it afterwards.

    .venv/bin/python bench/queue_throughput.py [--messages 100000] [--rounds 3]
        [--daily-activities 250000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.activities.rules import activity_key  # noqa: E402
from bench.production_state import (  # noqa: E402
    DAILY_ACTIVITIES,
    activity_id,
    fill_acknowledged_ids,
)
from resources.queues import PostgresQueues  # noqa: E402
from resources.warehouse import (  # noqa: E402
    WarehouseResource,
    close_pools,
    ensure_ready,
    stop_embedded_server,
)  # noqa: E402

QUEUE = "activities"


def make_bodies(count: int, first: int, size: int = 500) -> list[dict]:
    """Activity-shaped messages with the sequence ids `first` ..., padded so their JSON is about
    `size` bytes."""
    bodies = []
    for i in range(count):
        body = {
            "type": "activity",
            "tenant_id": f"tenant-{i % 7}",
            "activity_id": activity_id(first + i),
            "ticket_id": 100_000 + i % 5000,
            "actor_type": "user" if i % 3 else "system",
            "action": "ticket.status_changed",
            "occurred_at": "2026-11-24T12:00:00+00:00",
            "details": "",
        }
        body["details"] = "x" * max(0, size - len(json.dumps(body)))
        bodies.append(body)
    return bodies


def run_round(queues: PostgresQueues, bodies: list[dict], send_batch: int, receive_batch: int):
    started = time.perf_counter()
    for start in range(0, len(bodies), send_batch):
        queues.send(QUEUE, bodies[start : start + send_batch], dedup_key=activity_key)
    sent = time.perf_counter()
    receive_seconds = ack_seconds = 0.0
    received = 0
    while True:
        t0 = time.perf_counter()
        batch = queues.receive(QUEUE, max_messages=receive_batch, visibility_timeout=300)
        t1 = time.perf_counter()
        if not batch:
            break
        queues.ack(batch)
        t2 = time.perf_counter()
        receive_seconds += t1 - t0
        ack_seconds += t2 - t1
        received += len(batch)
    done = time.perf_counter()
    if received != len(bodies):
        raise SystemExit(f"received {received} of {len(bodies)} messages")
    return {
        "send": len(bodies) / (sent - started),
        "receive": len(bodies) / receive_seconds,
        "ack": len(bodies) / ack_seconds,
        "receive+ack": len(bodies) / (done - sent),
        "end to end": len(bodies) / (done - started),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--send-batch", type=int, default=1000)
    parser.add_argument("--receive-batch", type=int, default=500)
    parser.add_argument("--daily-activities", type=int, default=DAILY_ACTIVITIES)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="sf-bench-"))
    try:
        url = ensure_ready(None, home)
        queues = PostgresQueues(warehouse=WarehouseResource(database_url=url, home=str(home)))
        started = time.perf_counter()
        with queues._pool().connection() as conn:
            filled = fill_acknowledged_ids(conn, QUEUE, per_day=args.daily_activities)
        print(
            f"state: {filled:,} acknowledged ids of queue {QUEUE} "
            f"({args.daily_activities:,} a day, 14 days), filled in "
            f"{time.perf_counter() - started:,.0f} s"
        )
        sample = make_bodies(1000, filled)
        avg_bytes = statistics.mean(len(json.dumps(b)) for b in sample)
        print(
            f"postgres queue backend: {args.messages:,} messages of ~{avg_bytes:.0f} bytes, "
            f"send batches of {args.send_batch}, receive batches of {args.receive_batch}, "
            f"{args.rounds} rounds"
        )
        rounds = []
        for number in range(1, args.rounds + 1):
            bodies = make_bodies(args.messages, filled + (number - 1) * args.messages)
            figures = run_round(queues, bodies, args.send_batch, args.receive_batch)
            rounds.append(figures)
            print(
                f"round {number}: "
                + ", ".join(f"{phase} {rate:,.0f}/s" for phase, rate in figures.items())
            )
        print("median over rounds (messages per second):")
        for phase in rounds[0]:
            print(f"  {phase:<12} {statistics.median(r[phase] for r in rounds):>10,.0f}")
    finally:
        close_pools()
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

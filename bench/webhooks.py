"""Benchmark: verified webhook requests per second through the service into the postgres queue,
and delivery receipts applied per second by the `delivery_events` drain.

Runs its own embedded PostgreSQL in a temporary SUPPORTFLOW_HOME. Requests are signed before the
clock starts (signing is the provider's cost); each round posts them over HTTP with concurrent
clients to the service in a background uvicorn thread, which verifies and enqueues them. Then
notifications are stored and their receipts queued, and the `delivery_events` asset is
materialized (real Dagster) to drain them. Prints the median of the rounds.

    .venv/bin/python bench/webhooks.py [--rounds 3] [--requests 600] [--receipts 3000]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

HOME = Path(tempfile.mkdtemp(prefix="sf-bench-webhooks-"))
os.environ["SUPPORTFLOW_HOME"] = str(HOME)
os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)
os.environ.pop("SUPPORTFLOW_QUEUE_BACKEND", None)
os.environ["DAGSTER_HOME"] = str(HOME / "dagster")
(HOME / "dagster").mkdir(parents=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_requests(generator, count: int):
    """`count` signed requests, a third per provider; SendGrid batches 1-4 events."""
    now = datetime.now(UTC)
    requests = []
    for i in range(count):
        provider = ("mailgun", "sendgrid", "ses")[i % 3]
        n = generator.notification("bench", i + 1, "reply", provider, now)
        if provider == "sendgrid":
            kinds = ("accepted", "delivered", "open", "click")[: 1 + i % 4]
            items = [generator.sendgrid_event(n, k, now) for k in kinds]
            requests.append(generator.sendgrid_request(items))
        else:
            requests.append(generator.request_for(provider, [generator.event(n, "delivered", now)]))
    return requests


def post_all(base_url: str, requests, workers: int) -> float:
    import httpx

    def send(chunk):
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for request in chunk:
                response = client.post(request.path, content=request.body, headers=request.headers)
                if response.status_code != 200:
                    raise RuntimeError(
                        f"{request.provider}: {response.status_code} {response.text}"
                    )

    chunks = [requests[i::workers] for i in range(workers)]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, chunks))
    return time.perf_counter() - started


def get_all(base_url: str, count: int, workers: int) -> float:
    """GET /healthz `count` times with the same clients: requests per second."""
    import httpx

    def send(n: int) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as client:
            for _ in range(n):
                client.get("/healthz").raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(send, [count // workers] * workers))
    return (count // workers * workers) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--receipts", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()

    import dagster as dg
    import psycopg

    from assets.email.defs import EmailDelivery, delivery_events
    from assets.email.rules import parse_sent_notification, receipt_key
    from assets.email.store import store_sent_notifications
    from resources.runtime import build_resources, warehouse_url
    from resources.settings import Settings
    from resources.warehouse import close_pools, stop_embedded_server
    from sandbox.email_events import EmailEventGenerator, ProviderKeys
    from webhooks.app import WebhookService, create_app, serve_in_thread
    from webhooks.events import normalise_mailgun, normalise_sendgrid

    try:
        settings = Settings.from_env()
        url = warehouse_url(settings)
        resources = build_resources(settings, for_dagster=False)
        keys = ProviderKeys.generate()
        settings = dataclasses.replace(
            settings,
            mailgun_signing_key=keys.mailgun_signing_key,
            sendgrid_public_key=keys.sendgrid_public_key_b64,
            ses_topic_arns=(keys.ses_topic_arn,),
        )
        # the one stand-in: AWS's certificate host (the service caches after the first fetch)
        service = WebhookService(
            settings,
            resources["queues"],
            resources["warehouse"],
            extras={"aws_fetch": lambda u: keys.sns_certificate_pem},
        )
        generator = EmailEventGenerator(keys, seed=11)

        request_rates, event_rates, health_rates = [], [], []
        with serve_in_thread(create_app(service)) as base_url:
            post_all(base_url, make_requests(generator, 30), args.workers)  # warm-up
            for _ in range(args.rounds):  # the HTTP floor: same clients, no verify, no queue
                health_rates.append(get_all(base_url, args.requests, args.workers))
            for _ in range(args.rounds):
                requests = make_requests(generator, args.requests)
                events = sum(len(r.events) for r in requests)
                seconds = post_all(base_url, requests, args.workers)
                request_rates.append(len(requests) / seconds)
                event_rates.append(events / seconds)
        with psycopg.connect(url) as conn:
            queued = conn.execute(
                "select count(*) from control.queue_messages where queue = 'email_events'"
            ).fetchone()[0]
        print(
            f"webhooks: {args.requests} signed requests/round (mailgun/sendgrid/ses), "
            f"{args.workers} concurrent clients, {args.rounds} rounds, {queued} events queued"
        )
        rounds = ", ".join(f"{r:.0f}" for r in request_rates)
        print(
            f"  verified requests/s  median {statistics.median(request_rates):8.1f}  "
            f"(rounds: {rounds})"
        )
        print(f"  events enqueued/s    median {statistics.median(event_rates):8.1f}")
        floor = statistics.median(health_rates)
        print(
            f"  GET /healthz/s       median {floor:8.1f}  (verified requests reach "
            f"{statistics.median(request_rates) / floor:.0%} of the HTTP floor)"
        )

        receipt_rates = []
        now = datetime.now(UTC)
        for round_no in range(args.rounds):
            notifications, messages = [], []
            for i in range(args.receipts // 2):
                provider = ("mailgun", "sendgrid")[i % 2]
                n = generator.notification(f"r{round_no}", i + 1, "reply", provider, now)
                notifications.append(parse_sent_notification(n))
                final = "permanent" if i % 10 == 0 else "delivered"
                for kind, at in (("accepted", now), (final, now + timedelta(seconds=5))):
                    data, _ = generator.event(n, kind, at)
                    if provider == "mailgun":
                        messages += normalise_mailgun({"event-data": data})
                    else:
                        messages += normalise_sendgrid([data])
            with psycopg.connect(url) as conn:
                store_sent_notifications(conn, notifications)
            resources["queues"].send("email_events.default", messages, dedup_key=receipt_key)
            started = time.perf_counter()
            result = dg.materialize(
                [delivery_events],
                resources={**resources, "email_delivery": EmailDelivery()},
                raise_on_error=True,
            )
            seconds = time.perf_counter() - started
            applied = result.asset_materializations_for_node("delivery_events")[0].metadata
            assert applied["applied"].value == len(messages), applied
            receipt_rates.append(len(messages) / seconds)
        print(
            f"receipts: {args.receipts} receipts/round (10% permanent failures -> timeline "
            "activities), drained by materializing delivery_events"
        )
        rounds = ", ".join(f"{r:.0f}" for r in receipt_rates)
        print(
            f"  receipts applied/s   median {statistics.median(receipt_rates):8.1f}  "
            f"(rounds: {rounds})"
        )
    finally:
        close_pools()
        stop_embedded_server(HOME)
        shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()

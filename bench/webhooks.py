"""Benchmark: verified webhook requests per second against the HTTP floor of the same server, and
delivery receipts applied per second by the `delivery_events` drain, apart from Dagster's own
cost of a run.

Runs its own embedded PostgreSQL in a temporary SUPPORTFLOW_HOME.

1. HTTP. The webhook service runs alone in its own process (`supportflow webhooks serve`'s app
   under uvicorn, as deployed; the one stand-in is AWS's certificate host, whose certificate the
   service fetches once and caches, as in production). Requests are signed before the clock
   starts (signing is the provider's cost); `--workers` concurrent clients in this process post
   them, a third per provider (SendGrid batches 1-4 events). Each round times `GET /healthz`
   (readiness: a pooled connection and `select 1`; no verification, no write) and then the
   verified requests (body checks, signature, JSON, Mailgun's replay claim, enqueue into the
   postgres queue, answered once stored) with the same clients; the ratio is taken per round.
   Left out: TLS and a load balancer in front, which cost both the same.
2. Receipts. `--background` notifications of earlier days are in `raw.notifications` and as many
   acknowledged ids in the queue's dedup ledger (production holds days of both); each round
   stores `--receipts`/2 notifications and queues their `--receipts` receipts (10% permanent
   failures, which add a timeline activity), then drains them with the `delivery_events`
   asset's own body (direct invocation: the drain, no run around it), printed as receipts/s.
   Apart: a whole `materialize` of the asset for the same amount, and one with an empty queue,
   which is Dagster's fixed cost of a run (start, events, storage) that any drain pays.

Prints the median of `--rounds` rounds and the load.

    .venv/bin/python bench/webhooks.py [--rounds 5] [--requests 600] [--receipts 3000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

if "--serve" not in sys.argv:  # the service process takes its parent's environment
    HOME = Path(tempfile.mkdtemp(prefix="sf-bench-webhooks-"))
    os.environ["SUPPORTFLOW_HOME"] = str(HOME)
    os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)
    os.environ.pop("SUPPORTFLOW_QUEUE_BACKEND", None)
    os.environ["DAGSTER_HOME"] = str(HOME / "dagster")
    (HOME / "dagster").mkdir(parents=True)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CERTIFICATE_FILE = "SF_BENCH_SNS_CERTIFICATE_FILE"


def serve(port: int) -> None:
    """The service process: the app `supportflow webhooks serve` runs, with the certificate
    host's stand-in (the certificate from a file) instead of AWS."""
    import uvicorn

    from resources.settings import Settings
    from webhooks.app import build_service, create_app

    certificate = Path(os.environ[CERTIFICATE_FILE]).read_bytes()
    service = build_service(Settings.from_env())
    service.extras["aws_fetch"] = lambda url: certificate
    uvicorn.run(create_app(service), host="127.0.0.1", port=port, log_level="warning")


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


def post_all(clients, requests) -> float:
    def send(pair):
        client, chunk = pair
        for request in chunk:
            response = client.post(request.path, content=request.body, headers=request.headers)
            if response.status_code != 200:
                raise RuntimeError(f"{request.provider}: {response.status_code} {response.text}")

    chunks = [(c, requests[i :: len(clients)]) for i, c in enumerate(clients)]
    started = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(send, chunks))
    return time.perf_counter() - started


def get_all(clients, count: int) -> float:
    """GET /healthz `count` times with the same clients: requests per second."""

    def send(client) -> None:
        for _ in range(count // len(clients)):
            client.get("/healthz").raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(send, clients))
    return (count // len(clients) * len(clients)) / (time.perf_counter() - started)


def start_service(keys, url: str) -> tuple[subprocess.Popen, str]:
    import httpx

    from webhooks.app import free_port

    certificate = HOME / "sns-certificate.pem"
    certificate.write_bytes(keys.sns_certificate_pem)
    port = free_port()
    env = {
        **os.environ,
        **keys.env(),
        "SUPPORTFLOW_DATABASE_URL": url,
        CERTIFICATE_FILE: str(certificate),
    }
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], cwd=ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base_url + "/livez", timeout=1).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the webhook service did not start")
        time.sleep(0.1)


_BACKGROUND_SQL = """
insert into raw.notifications (notification_id, tenant_id, template_id, recipient, provider,
                               provider_reference, status, created_at, sent_at)
select 'bg-' || i, 'bench-' || i %% 50, 'reply', 'u' || i || '@example.org',
       (array['mailgun', 'sendgrid', 'ses'])[1 + i %% 3], 'bg-ref-' || i, 'delivered',
       now() - interval '3 days' + i * interval '100 ms', now() - interval '3 days'
from generate_series(1, %(count)s) i
"""
_BACKGROUND_ACKS_SQL = """
insert into control.queue_acks (queue, dedup_id, acked_at)
select %(queue)s, 'mailgun:bg-' || i, now() - interval '2 days'
from generate_series(1, %(count)s) i
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--receipts", type=int, default=3000)
    parser.add_argument("--background", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return

    import dagster as dg
    import httpx
    import psycopg

    from assets.email.defs import EmailDelivery, delivery_events
    from assets.email.rules import parse_sent_notification, receipt_key
    from assets.email.store import store_sent_notifications
    from resources.runtime import build_resources, warehouse_url
    from resources.settings import Settings
    from resources.warehouse import close_pools, stop_embedded_server
    from sandbox.email_events import EmailEventGenerator, ProviderKeys
    from webhooks.events import normalise_mailgun, normalise_sendgrid

    process = None
    try:
        settings = Settings.from_env()
        url = warehouse_url(settings)
        resources = build_resources(settings, for_dagster=False)
        keys = ProviderKeys.generate()
        generator = EmailEventGenerator(keys, seed=11)
        process, base_url = start_service(keys, url)

        print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
        request_rates, event_rates, health_rates, ratios = [], [], [], []
        clients = [httpx.Client(base_url=base_url, timeout=60) for _ in range(args.workers)]
        try:
            post_all(clients, make_requests(generator, 60))  # warm-up: connections, certificate
            get_all(clients, 80)
            for _ in range(args.rounds):
                health = get_all(clients, args.requests)
                requests = make_requests(generator, args.requests)
                events = sum(len(r.events) for r in requests)
                seconds = post_all(clients, requests)
                health_rates.append(health)
                request_rates.append(len(requests) / seconds)
                event_rates.append(events / seconds)
                ratios.append(request_rates[-1] / health)
        finally:
            for client in clients:
                client.close()
        with psycopg.connect(url) as conn:
            queued = conn.execute(
                "select count(*) from control.queue_messages where queue = 'email_events'"
            ).fetchone()[0]
        print(
            f"webhooks: {args.requests} signed requests/round (mailgun/sendgrid/ses), "
            f"{args.workers} concurrent clients, {args.rounds} rounds, {queued} events queued; "
            "the service in its own process"
        )

        def line(label: str, rates: list[float]) -> str:
            rounds = ", ".join(f"{r:.0f}" for r in rates)
            return f"  {label:<22} median {statistics.median(rates):8.1f}  (rounds: {rounds})"

        print(line("verified requests/s", request_rates))
        print(line("events enqueued/s", event_rates))
        print(line("GET /healthz/s", health_rates))
        print(
            f"  verified / healthz     median {statistics.median(ratios):8.2f}  (rounds: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")"
        )
        print(f"load: {os.getloadavg()[0]:.2f} (1 min)")

        with psycopg.connect(url) as conn:
            conn.execute(
                _BACKGROUND_SQL, {"count": args.background, "queue": "email_events.default"}
            )
            conn.execute("analyze raw.notifications, control.queue_acks")

        all_resources = {
            "warehouse": resources["warehouse"],
            "queues": resources["queues"],
            "alerts": resources["alerts"],
            "email_delivery": EmailDelivery(),
        }

        def queue_receipts(round_no: int) -> int:
            now = datetime.now(UTC)
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
            return len(messages)

        drain_rates, run_rates, empty_runs = [], [], []
        for round_no in range(args.rounds):
            count = queue_receipts(2 * round_no)
            started = time.perf_counter()
            result = delivery_events(dg.build_asset_context(), **all_resources)
            seconds = time.perf_counter() - started
            assert result.metadata["applied"] == count, result.metadata
            drain_rates.append(count / seconds)

            count = queue_receipts(2 * round_no + 1)
            started = time.perf_counter()
            run = dg.materialize([delivery_events], resources=all_resources)
            seconds = time.perf_counter() - started
            applied = run.asset_materializations_for_node("delivery_events")[0].metadata
            assert applied["applied"].value == count, applied
            run_rates.append(count / seconds)

            started = time.perf_counter()
            dg.materialize([delivery_events], resources=all_resources)
            empty_runs.append(time.perf_counter() - started)
        print(
            f"receipts: {args.receipts} receipts/round (10% permanent failures -> timeline "
            f"activities), {args.background:,} notifications and acknowledged ids beside them"
        )
        print(line("drain, receipts/s", drain_rates))
        print(line("whole run, receipts/s", run_rates))
        print(
            f"  Dagster's fixed cost of a run (empty queue): median "
            f"{statistics.median(empty_runs):.2f} s"
        )
        print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        close_pools()
        stop_embedded_server(HOME)
        shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()

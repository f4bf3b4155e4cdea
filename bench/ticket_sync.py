"""Benchmark: Zendesk ticket sync end to end into PostgreSQL, beside raw COPY of the same rows.

Starts its own embedded PostgreSQL in a temporary SUPPORTFLOW_HOME and the sandbox
(`supportflow sandbox serve --no-rate-limit`) in a subprocess, so the API server does not share
this process's interpreter. Then, for each round, a fresh desk syncs all tickets with sideloads
(HTTP, JSON, rows, COPY into staging, upsert, cursor, one transaction per page) and the same rows
are COPYed raw into a plain table in one statement. Prints the medians, the ratio, and the
requests per 1,000 comments of the ticket events export.

    .venv/bin/python bench/ticket_sync.py [--tickets 100000] [--rounds 3]
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
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def wait_for(url: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"sandbox exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("sandbox did not start")


def raw_copy(url: str, definition: str, rows: list[tuple]) -> float:
    """Rows/s of one COPY of `rows` into a fresh table `(definition)`, committed."""
    import psycopg
    from psycopg import sql

    from assets.tickets.store import copy_rows

    with psycopg.connect(url) as conn:
        conn.execute("drop table if exists bench_ticket_copy")
        conn.execute(sql.SQL("create table bench_ticket_copy ({})").format(sql.SQL(definition)))
        columns = [
            c.name
            for c in conn.execute("select * from bench_ticket_copy limit 0").description or ()
        ]
        conn.commit()
        started = time.perf_counter()
        copy_rows(conn, "bench_ticket_copy", columns[: len(rows[0])], rows)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("drop table bench_ticket_copy")
        conn.commit()
    return len(rows) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--comments-per-ticket", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="sf-bench-tickets-"))
    os.environ["SUPPORTFLOW_HOME"] = str(home)
    os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)

    from sandbox.server import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestration.cli",
            "sandbox",
            "serve",
            "--port",
            str(port),
            "--seed",
            "7",
            "--tickets",
            str(args.tickets),
            "--comments-per-ticket",
            str(args.comments_per_ticket),
            "--no-rate-limit",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        run(home, f"http://127.0.0.1:{port}", sandbox, args)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
        from resources.warehouse import close_pools, stop_embedded_server

        close_pools()
        stop_embedded_server(home)
        shutil.rmtree(home, ignore_errors=True)


def run(home: Path, base_url: str, sandbox: subprocess.Popen, args: argparse.Namespace) -> None:
    import psycopg

    from assets.tickets.desks import add_desk, get_desk
    from assets.tickets.rules import ticket_rows
    from assets.tickets.store import STAGING_DDL, sync_comments, sync_tickets
    from resources.runtime import build_resources, warehouse_url
    from resources.secrets import SecretBox
    from resources.settings import Settings
    from resources.zendesk import Credentials, ZendeskApi
    from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_TOKEN

    settings = Settings.from_env()
    url = warehouse_url(settings)
    warehouse = build_resources(settings, for_dagster=False)["warehouse"]
    box = SecretBox.from_settings(None, home)
    t0 = time.monotonic()
    wait_for(base_url, sandbox)
    print(f"sandbox with {args.tickets} tickets ready in {time.monotonic() - t0:.1f} s")

    def api(name: str) -> ZendeskApi:
        return ZendeskApi(
            desk=name,
            base_url=base_url,
            credentials=Credentials("token", SANDBOX_TOKEN, SANDBOX_EMAIL),
            export_rate_per_minute=10**7,
            api_rate_per_minute=10**7,
        )

    def new_desk(name: str):
        with psycopg.connect(url, autocommit=True) as conn:
            add_desk(
                conn,
                box,
                name=name,
                subdomain="bench",
                base_url=base_url,
                email=SANDBOX_EMAIL,
                token=SANDBOX_TOKEN,
                export_rate_per_minute=10**6,
                api_rate_per_minute=10**6,
            )
            return get_desk(conn, name)

    # the same rows, built once, for the raw COPY baseline
    with api("rows") as client:
        pages = list(client.export_tickets(start_time=0, per_page=1000))
    rows = [row for page in pages for row in ticket_rows(page)]
    del pages
    print(
        f"{len(rows)} ticket rows, {sum(len(r[-1]) for r in rows) / len(rows):.0f} B of JSON each"
    )

    # the same rows as they land in raw.zendesk_tickets (desk, tenant, generated_at added)
    full_rows = [
        (0, r[0], "bench", *r[1:15], datetime.fromtimestamp(r[15], UTC), r[16], False, r[17])
        for r in rows
    ]
    sync_rates, copy_rates, plain_rates = [], [], []
    for round_no in range(1, args.rounds + 1):
        desk = new_desk(f"bench-{round_no}")
        with api(desk.name) as client:
            started = time.perf_counter()
            stats = sync_tickets(warehouse.connection, client, desk, per_page=1000)
            elapsed = time.perf_counter() - started
        assert stats.inserted == args.tickets, stats
        sync_rates.append(stats.inserted / elapsed)

        copy_rates.append(raw_copy(url, "like raw.zendesk_tickets including all", full_rows))
        plain_rates.append(raw_copy(url, STAGING_DDL["zendesk_tickets_stage"], rows))
        print(
            f"round {round_no}: sync {sync_rates[-1]:,.0f} tickets/s "
            f"({stats.pages} pages, {elapsed:.1f} s); raw COPY {copy_rates[-1]:,.0f} rows/s "
            f"(unindexed table {plain_rates[-1]:,.0f} rows/s)"
        )

    desk = new_desk("bench-comments")
    with api(desk.name) as client:
        started = time.perf_counter()
        comments = sync_comments(warehouse.connection, client, desk, per_page=1000)
        elapsed = time.perf_counter() - started
        requests = client.stats.requests["ticket_events_export"]

    sync_rate = statistics.median(sync_rates)
    copy_rate = statistics.median(copy_rates)
    plain_rate = statistics.median(plain_rates)
    print()
    print(f"median of {args.rounds} rounds, {args.tickets:,} tickets with sideloads")
    print(f"tickets end to end (HTTP + sideloads + upsert + cursor): {sync_rate:,.0f} tickets/s")
    print(f"raw COPY of the same rows into a copy of the table:      {copy_rate:,.0f} rows/s")
    print(f"ratio end to end / raw COPY:                             {sync_rate / copy_rate:.2f}")
    print(
        f"(raw COPY into an unindexed table: {plain_rate:,.0f} rows/s, ratio "
        f"{sync_rate / plain_rate:.2f})"
    )
    print(
        f"comments: {comments.inserted:,} in {elapsed:.1f} s "
        f"({comments.inserted / elapsed:,.0f}/s), {requests} requests = "
        f"{requests / (comments.inserted / 1000):.2f} requests per 1,000 comments"
    )


if __name__ == "__main__":
    main()

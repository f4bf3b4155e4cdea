"""Benchmark: Zendesk ticket sync end to end into PostgreSQL.

Two modes, each starting its own embedded PostgreSQL in a temporary SUPPORTFLOW_HOME and the
sandbox in a subprocess (so the API server does not share the measured interpreter).

`--limits enterprise`: a desk's initial sync under Zendesk Enterprise limits (700 requests a
minute for the account, 10 a minute for incremental exports) on a clock running `--clock-scale`
(10) times faster, the desk's own budgets scaled to match. 20,000 tickets with about 4 comments
each, `--deleted` (200) of them deleted before the sync, drawn from the newest tenth of the
tickets (`--deleted-newest 1` draws from all). The sync is `supportflow sync` in a process of its
own, as a user runs it. Prints the simulated minutes from the sync's first to its last request
(the measure of the goal: process start-up happens at real speed, so it is printed apart, not
scaled), requests by endpoint, 429s, the sync process's peak RSS (its ru_maxrss from wait4) and
the comparison of the warehouse with the sandbox's truth: every ticket and comment once, on its
ticket, deleted tickets marked. Left out: network latency (the sandbox is local) and other
API users of the account.

Default mode (loader speed, no rate limit): see `run` below.

    .venv/bin/python bench/ticket_sync.py --limits enterprise
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


# Zendesk Enterprise: 700 requests a minute for the account, 10 a minute for incremental exports
LIMITS = {"enterprise": (10, 700)}


def serve_sandbox(args: argparse.Namespace) -> None:
    """The sandbox process of the limits mode: one account with the plan's limits on a clock
    running `clock_scale` times faster, some tickets deleted before the sync starts."""
    import random

    import uvicorn

    from sandbox.server import SandboxConfig, build_app
    from sandbox.zendesk import RateLimits, ZendeskSandbox

    export_limit, api_limit = LIMITS[args.limits]
    account = ZendeskSandbox(
        seed=7,
        tickets=args.tickets,
        comments_per_ticket=args.comments_per_ticket,
        rate_limits=RateLimits(export_per_minute=export_limit, api_per_minute=api_limit),
        clock_scale=args.clock_scale,
    )
    # spam and mistakes are deleted soon after they arrive: deleted tickets are drawn from the
    # newest `--deleted-newest` share of tickets (1.0: from all of them)
    ids = sorted(account.tickets)
    newest = ids[int(len(ids) * (1 - args.deleted_newest)) :]
    account.delete_tickets(sorted(random.Random(7).sample(newest, args.deleted)))
    config = SandboxConfig(extra={"zendesk_accounts": {"default": account}})
    uvicorn.run(
        build_app(config),
        host="127.0.0.1",
        port=args.serve_sandbox,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def run_limits(home: Path, base_url: str, sandbox: subprocess.Popen, args) -> None:
    """Initial sync of one desk by `supportflow sync` in a process of its own, under the plan's
    limits on the scaled clock; prints simulated minutes, requests, 429s, the sync process's
    peak RSS and the comparison with the sandbox's truth."""
    import httpx
    import psycopg

    from assets.tickets.desks import add_desk
    from resources.runtime import warehouse_url
    from resources.secrets import SecretBox
    from resources.settings import Settings
    from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_TOKEN

    export_limit, api_limit = LIMITS[args.limits]
    scale = args.clock_scale
    url = warehouse_url(Settings.from_env())
    t0 = time.monotonic()
    wait_for(base_url, sandbox)
    print(f"sandbox with {args.tickets:,} tickets ready in {time.monotonic() - t0:.1f} s")
    with psycopg.connect(url, autocommit=True) as conn:
        add_desk(
            conn,
            SecretBox.from_settings(None, home),
            name="bench",
            subdomain="bench",
            base_url=base_url,
            email=SANDBOX_EMAIL,
            token=SANDBOX_TOKEN,
            # the desk's own budgets on the same scaled clock as the sandbox's limits
            export_rate_per_minute=int(export_limit * scale),
            api_rate_per_minute=int(api_limit * scale),
        )
    command = [sys.executable, "-m", "orchestration.cli", "sync", "bench"]
    load = os.getloadavg()
    started = time.time()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.time() - started
    out, err = process.stdout.read().decode(), process.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"supportflow sync failed ({status}): {err.strip()}")
    truth = httpx.get(f"{base_url}/_sandbox/zendesk/default/truth", timeout=30).json()
    ids = httpx.get(f"{base_url}/_sandbox/zendesk/default/truth/ids", timeout=60).json()
    first, last = ids["request_span"]
    ended = {}  # endpoint -> simulated minutes from the first request to its last one
    for at, endpoint in ids["requests"]:
        ended[endpoint] = (at - first) * scale / 60
    with psycopg.connect(url) as conn:
        tickets = dict(conn.execute("select ticket_id, is_deleted from raw.zendesk_tickets"))
        comments = conn.execute("select comment_id, ticket_id from raw.zendesk_ticket_comments")
        comments = comments.fetchall()
    want_tickets = {tid: deleted for tid, deleted in ids["tickets"]}
    want_comments = {cid: tid for cid, tid in ids["comments"]}
    got_comments = dict(comments)
    missing = set(want_comments) - set(got_comments)
    extra = set(got_comments) - set(want_comments)
    wrong = sum(1 for cid, tid in got_comments.items() if want_comments.get(cid, tid) != tid)
    exact = (
        tickets == want_tickets
        and not missing
        and not extra
        and not wrong
        and len(comments) == len(got_comments)
    )
    requests = truth["requests"]
    throttled = {k: v for k, v in truth["responses"].items() if k.startswith("429")}
    print(f"load before the sync: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(out.strip())
    print(
        f"{args.limits} limits ({export_limit}/min exports, {api_limit}/min account), "
        f"clock x{scale:g}"
    )
    print(
        f"{len(want_tickets):,} tickets ({sum(want_tickets.values())} deleted), "
        f"{len(want_comments):,} comments"
    )
    print(
        f"initial sync: {(last - first) * scale / 60:.1f} simulated minutes from the first to "
        f"the last request ({last - first:.1f} s real); the whole command {wall:.1f} s real "
        f"({wall * scale / 60:.1f} simulated minutes if its start-up is scaled too)"
    )
    print(f"requests: {sum(requests.values()):,} {dict(sorted(requests.items()))}")
    print(
        "last request by endpoint, simulated minutes: "
        + ", ".join(f"{e} {m:.1f}" for e, m in sorted(ended.items(), key=lambda i: i[1]))
    )
    print(f"429s: {sum(throttled.values())} {throttled}")
    print(f"peak RSS of `supportflow sync`: {usage.ru_maxrss / 1024:.0f} MB")
    print(
        f"exact: {'yes' if exact else 'NO'} (tickets {len(tickets):,}/{len(want_tickets):,}, "
        f"deleted marked {sum(tickets.values())}/{sum(want_tickets.values())}; comments "
        f"{len(got_comments):,}/{len(want_comments):,}, missing {len(missing)}, extra "
        f"{len(extra)}, on the wrong ticket {wrong})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=None)
    parser.add_argument("--comments-per-ticket", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limits", choices=sorted(LIMITS), default=None)
    parser.add_argument("--clock-scale", type=float, default=10.0)
    parser.add_argument("--deleted", type=int, default=200)
    parser.add_argument("--deleted-newest", type=float, default=0.1)
    parser.add_argument("--serve-sandbox", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tickets is None:
        args.tickets = 20_000 if args.limits else 100_000
    if args.comments_per_ticket is None:
        args.comments_per_ticket = 4.0 if args.limits else 1.5
    if args.serve_sandbox is not None:
        serve_sandbox(args)
        return

    home = Path(tempfile.mkdtemp(prefix="sf-bench-tickets-"))
    os.environ["SUPPORTFLOW_HOME"] = str(home)
    os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)

    from sandbox.server import free_socket

    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    if args.limits:
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            *sys.argv[1:],
            "--serve-sandbox",
            str(port),
        ]
    else:
        command = [
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
        ]
    sandbox = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        if args.limits:
            run_limits(home, f"http://127.0.0.1:{port}", sandbox, args)
        else:
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

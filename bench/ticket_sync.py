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

Default mode: loader speed without rate limits, the sync's ticket loader against a minimal
fetch + parse + COPY loader of the same rows in the same run (see `run` and `minimal_load`).

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


# Zendesk Enterprise: 700 requests a minute for the account, 10 a minute for incremental exports
LIMITS = {"enterprise": (10, 700)}


def serve_sandbox(args: argparse.Namespace) -> None:
    """The sandbox process of the limits mode: one account with the plan's limits on a clock
    running `clock_scale` times faster, some tickets deleted before the sync starts."""
    import random

    import uvicorn

    from sandbox.server import SandboxConfig, build_app
    from sandbox.zendesk import RateLimits, ZendeskSandbox

    export_limit, api_limit = LIMITS[args.limits] if args.limits else (None, None)
    account = ZendeskSandbox(
        seed=7,
        tickets=args.tickets,
        comments_per_ticket=args.comments_per_ticket,
        rate_limits=RateLimits(export_per_minute=export_limit, api_per_minute=api_limit),
        clock_scale=args.clock_scale,
        json_cache=False,  # Zendesk does not serve a page faster for having served it before
    )
    # spam and mistakes are deleted soon after they arrive: deleted tickets are drawn from the
    # newest `--deleted-newest` share of tickets (1.0: from all of them)
    ids = sorted(account.tickets)
    newest = ids[int(len(ids) * (1 - args.deleted_newest)) :]
    if args.limits:
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
    command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    command += ["--serve-sandbox", str(port)]
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


MINIMAL_COLUMNS = (
    "desk_id", "tenant_id", "ticket_id", "status", "subject", "priority", "ticket_type",
    "requester_id", "req_name", "req_email", "assignee_id", "assignee_name", "group_id",
    "group_name", "organization_id", "created_at", "updated_at", "generated_at", "solved_at",
    "is_deleted", "raw_data", "metric_set",
)  # fmt: skip


def minimal_load(url: str, base_url: str, table: str, per_page: int = 1000) -> int:
    """The baseline: the least a loader of these rows must do. It fetches the same export pages
    (same sideloads, same page size, one HTTP client), parses them with orjson, takes the
    requester's and assignee's names from the sideloaded users, the group's name and solved_at
    from the metric sets, and COPYs every page's rows into `table`, committing once at the end.
    No upsert, no cursor, no users or groups written, no prefetch. Returns rows loaded."""
    import httpx
    import orjson
    import psycopg
    from psycopg import sql

    from resources.zendesk import Credentials
    from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_TOKEN

    auth = Credentials("token", SANDBOX_TOKEN, SANDBOX_EMAIL).header()
    statement = sql.SQL("copy {} ({}) from stdin").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, MINIMAL_COLUMNS))
    )
    loaded = 0
    params: dict | None = {
        "start_time": 0,
        "per_page": per_page,
        "include": "users,groups,organizations,metric_sets",
    }
    next_url: str | None = f"{base_url}/api/v2/incremental/tickets/cursor.json"
    with (
        httpx.Client(headers={"Authorization": auth}, timeout=60) as http,
        psycopg.connect(url) as conn,
    ):
        while next_url:
            page = orjson.loads(http.get(next_url, params=params).content)
            users = {u["id"]: u for u in page["users"]}
            groups = {g["id"]: g["name"] for g in page["groups"]}
            metrics = {m["ticket_id"]: m for m in page["metric_sets"]}
            nobody: dict = {}
            with conn.cursor() as cur, cur.copy(statement) as copy:
                for t in page["tickets"]:
                    requester = users.get(t["requester_id"], nobody)
                    assignee = users.get(t["assignee_id"], nobody)
                    metric = metrics.get(t["id"])
                    copy.write_row(
                        (
                            0, "bench", t["id"], t["status"], t["subject"], t["priority"],
                            t["type"], t["requester_id"], requester.get("name"),
                            requester.get("email"), t["assignee_id"], assignee.get("name"),
                            t["group_id"], groups.get(t["group_id"]), t["organization_id"],
                            t["created_at"], t["updated_at"],
                            datetime.fromtimestamp(t["generated_timestamp"], UTC),
                            metric and metric["solved_at"], t["status"] == "deleted",
                            orjson.dumps(t).decode(), metric and orjson.dumps(metric).decode(),
                        )
                    )  # fmt: skip
            loaded += len(page["tickets"])
            next_url = None if page["end_of_stream"] else page["after_url"]
            params = None
        conn.commit()
    return loaded


def run(home: Path, base_url: str, sandbox: subprocess.Popen, args: argparse.Namespace) -> None:
    """Loader speed, no rate limit: per round, the sync's ticket loader (`sync_tickets`: HTTP,
    msgspec parse, rows, COPY into staging, upsert of tickets, users and groups, cursor, one
    transaction per page, the next page prefetched) and the minimal loader (`minimal_load`) read
    the same export from the same sandbox, which serialises every page afresh for both (no JSON
    cache). Each writes into an empty table with the indexes of raw.zendesk_tickets: the sync's
    tables are truncated before its round, the baseline's copy is made anew. The order of the
    two alternates by round. Prints both rates, their ratio per round and the median ratio, and
    the ticket events export's requests per 1,000 comments. Left out: network latency, and the
    sync's users and groups are extra work the baseline does not do (counted against the sync)."""
    import psycopg

    from assets.tickets.desks import add_desk, get_desk
    from assets.tickets.store import sync_comments, sync_tickets
    from resources.runtime import make_warehouse, warehouse_url
    from resources.secrets import SecretBox
    from resources.settings import Settings
    from resources.zendesk import Credentials, ZendeskApi
    from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_TOKEN

    settings = Settings.from_env()
    url = warehouse_url(settings)
    warehouse = make_warehouse(settings)
    box = SecretBox.from_settings(None, home)
    t0 = time.monotonic()
    wait_for(base_url, sandbox)
    print(f"sandbox with {args.tickets:,} tickets ready in {time.monotonic() - t0:.1f} s")

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

    def timed_sync(round_no: int) -> float:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("truncate raw.zendesk_tickets, raw.zendesk_users, raw.zendesk_groups")
            conn.execute("vacuum analyze raw.zendesk_tickets")
        desk = new_desk(f"bench-{round_no}")
        with api(desk.name) as client:
            started = time.perf_counter()
            stats = sync_tickets(warehouse.connection, client, desk, per_page=1000)
            elapsed = time.perf_counter() - started
        assert stats.inserted == args.tickets, stats
        return stats.inserted / elapsed

    def timed_baseline() -> float:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("drop table if exists bench_ticket_copy")
            conn.execute("create table bench_ticket_copy (like raw.zendesk_tickets including all)")
        started = time.perf_counter()
        loaded = minimal_load(url, base_url, "bench_ticket_copy")
        elapsed = time.perf_counter() - started
        assert loaded == args.tickets, loaded
        return loaded / elapsed

    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    sync_rates, baseline_rates, ratios = [], [], []
    for round_no in range(1, args.rounds + 1):
        if round_no % 2:
            sync_rates.append(timed_sync(round_no))
            baseline_rates.append(timed_baseline())
        else:
            baseline_rates.append(timed_baseline())
            sync_rates.append(timed_sync(round_no))
        ratios.append(sync_rates[-1] / baseline_rates[-1])
        print(
            f"round {round_no}: sync {sync_rates[-1]:,.0f} tickets/s, minimal loader "
            f"{baseline_rates[-1]:,.0f} tickets/s, ratio {ratios[-1]:.2f}"
        )

    desk = new_desk("bench-comments")
    with api(desk.name) as client:
        started = time.perf_counter()
        comments = sync_comments(warehouse.connection, client, desk, per_page=1000, split=None)
        elapsed = time.perf_counter() - started
        requests = client.stats.requests["ticket_events_export"]

    print()
    print(f"median of {args.rounds} rounds, {args.tickets:,} tickets with sideloads")
    print(f"sync's ticket loader:  {statistics.median(sync_rates):,.0f} tickets/s")
    print(f"minimal loader:        {statistics.median(baseline_rates):,.0f} tickets/s")
    print(f"ratio (median of the rounds' ratios): {statistics.median(ratios):.2f}")
    print(f"load: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"comments (export alone): {comments.inserted:,} in {elapsed:.1f} s "
        f"({comments.inserted / elapsed:,.0f}/s), {requests} requests = "
        f"{requests / (comments.inserted / 1000):.2f} requests per 1,000 comments"
    )


if __name__ == "__main__":
    main()

"""Benchmark: template statistics of one tenant, the last 7 whole days plus today, over 10 million
notifications: p50/p95 latency of one answer, through the function, the command and the read API.

State (own embedded PostgreSQL in a temporary SUPPORTFLOW_HOME, generated in SQL): `--notifications`
spread evenly over `--days` days ending today (UTC, the default zone), in sending order; the days
within the default retention (today and 7 whole days) in `raw.notifications`, older ones in
`raw.notification_history`, as retention leaves them. `--tenants` tenants with a log-uniform
spread (the largest sends about 11% of all mail), each with up to 40 templates (also skewed);
statuses mostly `delivered`, some failures, `pending` and `sending`. Today holds a whole day's
volume (the worst case: the end of the day), inserted as `sending` and then moved to final
statuses by one update per batch as receipts do, and is not vacuumed (the older days are: by
then autovacuum has seen them). `analytics.template_stats_daily` holds every past day, as the
`template_stats` partitions leave it.

Measured, `--repetitions` times each, tenants and `--days` (0..7) varied, in one process:
- function: `assets.email.store.template_stats` on a pooled connection (what both callers run);
- command: `supportflow stats templates TENANT --days N --json` run in-process through the CLI's
  click group (its argument parsing, settings, tenant check, pooled connection and output); what
  a process pays once is printed apart: registering the commands (`main` does it on every call)
  and one whole `supportflow stats templates` process, interpreter start-up included;
- read API: `GET /api/v1/templates/stats?days=N` with the tenant's bearer token over HTTP to the
  service (uvicorn in a background thread of this process; one client, sequential requests).
Each for the largest tenant (days=7) and for tenants drawn uniformly (days drawn 0..7).

    .venv/bin/python bench/template_stats.py [--notifications 10000000] [--repetitions 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

HOME = Path(tempfile.mkdtemp(prefix="sf-bench-template-stats-"))
os.environ["SUPPORTFLOW_HOME"] = str(HOME)
os.environ.pop("SUPPORTFLOW_DATABASE_URL", None)
os.environ.pop("SUPPORTFLOW_EMAIL_TIMEZONE", None)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RETAINED_DAYS = 7  # the default retention: today and 7 whole days stay in raw.notifications

# One day of notifications, in sending order. Tenant and template ranks are log-uniform
# (P(rank k) ~ 1/k); the status is drawn from a hash of the row, by fixed shares.
_DAY_SQL = """
insert into {table} ({columns})
select 'n' || %(day)s || '-' || i,
       'bench-' || floor(exp(random() * ln(%(tenants)s + 1)))::int,
       1 + i %% 50000,
       'tpl-' || floor(exp(random() * ln(41)))::int,
       {recipient}
       (array['mailgun', 'sendgrid', 'ses'])[1 + i %% 3],
       'ref-' || %(day)s || '-' || i,
       {status},
       s.at, s.at, s.at + interval '5 seconds'
from generate_series(1, %(count)s) i,
     lateral (select %(start)s::timestamptz + (i * 86400.0 / %(count)s) * interval '1 second'
              as at) s
"""
_COLUMNS = (
    "notification_id, tenant_id, ticket_id, template_id, {recipient}provider, "
    "provider_reference, status, created_at, sent_at, status_updated_at"
)


# today's receipts, one batch of ten: a status drawn from a hash of the id, by the same shares
_RECEIPTS_SQL = """
update raw.notifications
set status = (case when h < 930 then 'delivered' when h < 960 then 'permanent-failure'
                   when h < 980 then 'temporary-failure' when h < 990 then 'pending'
                   else 'sending' end),
    status_updated_at = sent_at + interval '10 seconds'
from (select notification_id as id, (hashtext(notification_id)::bigint %% 1000 + 1000) %% 1000 as h
      from raw.notifications where sent_at >= %(today)s and status = 'sending') d
where notification_id = d.id and d.h %% 10 = %(batch)s
"""


def final_status(draw: str) -> str:
    """A final status by share from `draw`, an SQL number in [0, 1)."""
    return (
        f"(case when {draw} < 0.93 then 'delivered' when {draw} < 0.96 then 'permanent-failure' "
        f"when {draw} < 0.98 then 'temporary-failure' when {draw} < 0.99 then 'pending' "
        "else 'sending' end)"
    )


def generate(conn, total: int, days: int, tenants: int, today_start: datetime) -> None:
    per_day = total // days
    for back in range(days - 1, -1, -1):
        live = back <= RETAINED_DAYS
        table = "raw.notifications" if live else "raw.notification_history"
        status = "'sending'" if back == 0 else final_status("(i::bigint * 7919 %% 1000) / 1000.0")
        query = _DAY_SQL.format(
            table=table,
            columns=_COLUMNS.format(recipient="recipient, " if live else ""),
            recipient="'u' || i || '@example.org'," if live else "",
            status=status,
        )
        params = {
            "day": back,
            "count": per_day,
            "start": today_start - timedelta(days=back),
            "tenants": tenants,
        }
        with conn.transaction():
            conn.execute(query, params)
        if back == 1:  # what autovacuum has long done for the past days
            conn.execute("vacuum analyze raw.notifications, raw.notification_history")
        print(f"  day -{back}: {per_day:,} into {table}", flush=True)
    # today's receipts: batches of status changes, as the drains apply them
    for batch in range(10):
        with conn.transaction():
            conn.execute(_RECEIPTS_SQL, {"today": today_start, "batch": batch})
    conn.execute("analyze raw.notifications")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1)]


def report(label: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(
        f"  {label:<44} p50 {statistics.median(ms):7.2f} ms   p95 {percentile(ms, 0.95):7.2f} ms"
        f"   max {max(ms):7.2f} ms  (n={len(ms)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--notifications", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--tenants", type=int, default=500)
    parser.add_argument("--repetitions", type=int, default=200)
    args = parser.parse_args()

    import httpx

    from assets.email.store import (
        fold_notification_counts,
        template_stats,
        write_template_stats_day,
    )
    from orchestration.cli import _register_domains, cli
    from resources.api_tokens import issue_api_token
    from resources.runtime import warehouse_url
    from resources.settings import Settings
    from resources.warehouse import close_pools, get_pool, stop_embedded_server
    from webhooks.app import build_service, create_app, serve_in_thread

    try:
        settings = Settings.from_env()
        url = warehouse_url(settings)
        pool = get_pool(url)
        zone = ZoneInfo(settings.email_timezone)
        now = datetime.now(UTC)
        today = now.astimezone(zone).date()
        today_start = datetime.combine(today, datetime.min.time(), tzinfo=zone)
        started = time.perf_counter()
        print(f"generating {args.notifications:,} notifications over {args.days} days ...")
        with pool.connection() as conn:
            conn.autocommit = True
            generate(conn, args.notifications, args.days, args.tenants, today_start)
            conn.autocommit = False
            with conn.transaction():  # as the drains do at the end of each batch
                fold_notification_counts(conn)
            for back in range(1, args.days):
                with conn.transaction():
                    write_template_stats_day(conn, today - timedelta(days=back), zone)
            conn.commit()
        with pool.connection() as conn:
            live, archived, largest_today = conn.execute(
                "select (select count(*) from raw.notifications), "
                "(select count(*) from raw.notification_history), "
                "(select count(*) from raw.notifications where tenant_id = 'bench-1' "
                "and sent_at >= %s)",
                (today_start,),
            ).fetchone()
        print(
            f"state: {live:,} in raw.notifications, {archived:,} in raw.notification_history; "
            f"the largest tenant sent {largest_today:,} today "
            f"({time.perf_counter() - started:.0f} s to set up)"
        )

        rng = random.Random(18)
        largest = [("bench-1", 7)] * args.repetitions
        mixed = [
            (f"bench-{rng.randint(1, args.tenants)}", rng.randint(0, 7))
            for _ in range(args.repetitions)
        ]
        tokens: dict[str, str] = {}
        with pool.connection() as conn:
            for tenant, _ in largest[:1] + mixed:
                if tenant not in tokens:
                    tokens[tenant] = issue_api_token(conn, tenant, "bench")

        def function(tenant: str, days: int) -> None:
            with pool.connection() as conn:
                template_stats(conn, tenant, days, zone, datetime.now(UTC))

        def command(tenant: str, days: int) -> None:
            out = io.StringIO()
            args = ["stats", "templates", tenant, "--days", str(days), "--json"]
            with contextlib.redirect_stdout(out):
                cli.main(args=args, prog_name="supportflow", standalone_mode=False)
            assert out.getvalue()

        begin = time.perf_counter()
        _register_domains()  # what `main` does before each command, once per process here
        registering = time.perf_counter() - begin
        print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
        print(f"template statistics, {args.repetitions} answers per line:")
        with (
            serve_in_thread(create_app(build_service(settings))) as base_url,
            httpx.Client(base_url=base_url, timeout=60) as client,
        ):

            def api(tenant: str, days: int) -> None:
                response = client.get(
                    "/api/v1/templates/stats",
                    params={"days": days},
                    headers={"Authorization": f"Bearer {tokens[tenant]}"},
                )
                response.raise_for_status()

            paths = (("function", function), ("command", command), ("read API", api))
            for label, cases in (("largest tenant, days=7", largest), ("mixed", mixed)):
                seconds: dict[str, list[float]] = {name: [] for name, _ in paths}
                for _, call in paths:
                    call(*cases[0])  # the first call opens connections
                # the paths take turns on each case, so background work (autovacuum after the
                # load, other processes) weighs on all three alike
                for tenant, days in cases:
                    for name, call in paths:
                        begin = time.perf_counter()
                        call(tenant, days)
                        seconds[name].append(time.perf_counter() - begin)
                for name, _ in paths:
                    report(f"{name}: {label}", seconds[name])
        begin = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "orchestration.cli", "stats", "templates", "bench-1"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        print(
            f"  (once per process: registering the commands {registering * 1000:.1f} ms; one "
            f"`supportflow stats templates bench-1` process, start-up included: "
            f"{time.perf_counter() - begin:.2f} s)"
        )
        print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        close_pools()
        stop_embedded_server(HOME)
        shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    main()

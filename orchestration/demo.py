"""The end-to-end demo (`supportflow demo`, `make demo`): every pipeline on sandbox data.

It starts what a fresh machine lacks (the embedded PostgreSQL, the sandbox APIs and the webhook
service in background threads), registers a desk and a feedback workspace, publishes events,
sends signed webhooks over HTTP, runs every pipeline through Dagster against the persistent local
instance (so the runs show in `make dev`), and prints a summary. Every step is idempotent:
registrations are looked up before they are made, events carry fixed ids, and the pipelines
themselves never write a row twice, so running the demo again leaves the same tables.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from orchestration.settings import Settings

DEMO_TENANT = "demo"
DEMO_DESK = "demo-desk"
DEMO_SEED = 7
DEMO_TICKETS = 40
DEMO_DAYS = 7  # the backfill: the last 7 whole days
DEMO_NOTIFICATIONS = 36
ZENDESK_TOKEN_ENV = "SUPPORTFLOW_DEMO_ZENDESK_TOKEN"

# Tables in the summary, in the order data flows through them.
SUMMARY_TABLES = (
    "raw.zendesk_tickets",
    "raw.zendesk_users",
    "raw.zendesk_ticket_comments",
    "raw.activities",
    "raw.notifications",
    "raw.delivery_events",
    "raw.feedback_items",
    "analytics.template_stats_daily",
    "analytics.insight_reports",
    "analytics.fct_tickets",
    "analytics.fct_ticket_comments",
    "analytics.agg_activity_daily",
    "analytics.fct_notifications",
    "analytics.template_delivery_7d",
    "analytics.agg_feedback_daily",
)

ANALYST_SQL = """\
-- first reply and resolution times per group
select group_name, count(*) as tickets,
       percentile_cont(0.5) within group (order by first_reply_minutes) as median_first_reply_min,
       percentile_cont(0.5) within group (order by full_resolution_minutes) as median_resolution_min
from analytics.fct_tickets group by group_name order by tickets desc;

-- delivery rate per template, the last 7 days plus today
select template_id, sent, delivered, permanent_failures, delivery_rate
from analytics.template_delivery_7d order by sent desc;"""


@dataclass
class DemoRun:
    """What the steps share: settings, the Dagster instance and definitions, service URLs."""

    settings: Settings
    echo: Callable[[str], None]
    instance: Any = None
    defs: Any = None
    database_url: str = ""
    sandbox_url: str = ""
    webhooks_url: str = ""
    provider_keys: Any = None
    facts: dict[str, Any] = field(default_factory=dict)
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


class DemoFailed(click.ClickException):
    """A demo step failed; the message names the step."""


def _table_exists(conn: Any, qualified: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (qualified,)).fetchone()[0]


def row_counts(database_url: str, tables: tuple[str, ...] = SUMMARY_TABLES) -> dict[str, int]:
    """Rows per table that exists (qualified names are fixed identifiers, not input)."""
    import psycopg
    from psycopg import sql

    counts: dict[str, int] = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for qualified in tables:
            if not _table_exists(conn, qualified):
                continue
            schema, table = qualified.split(".")
            query = sql.SQL("select count(*) from {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            counts[qualified] = conn.execute(query).fetchone()[0]
    return counts


def demo_now() -> datetime:
    """The demo's clock: the start of the current UTC hour, so runs within the hour generate the
    same sandbox data and events (same ids, same timestamps) and change nothing."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def backfill_days(today: date, days: int = DEMO_DAYS) -> list[date]:
    """The whole days before `today`, oldest first (today's daily partition does not exist yet)."""
    return [today - timedelta(days=n) for n in range(days, 0, -1)]


def demo_activities(tenant: str, today: date, tickets: int, per_day: int = 16) -> list[dict]:
    """Deterministic `activity` events over the backfill days and today: agents replying,
    changing status and assigning (user), automation rules (system). Ids are fixed per day, so
    publishing them again has no second effect."""
    user_actions = ("reply", "status_changed", "assigned", "note", "priority_changed")
    events = []
    for day in [*backfill_days(today), today]:
        rng = random.Random(f"{DEMO_SEED}:{tenant}:{day.isoformat()}")
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for n in range(per_day):
            system = rng.random() < 0.3
            events.append(
                {
                    "type": "activity",
                    "activity_id": f"{tenant}-{day.isoformat()}-{n:03d}",
                    "tenant_id": tenant,
                    "ticket_id": rng.randint(1, tickets),
                    "actor_type": "system" if system else "user",
                    "actor_id": "rule-auto-close" if system else f"agent-{rng.randint(1, 5)}",
                    "action": "status_changed" if system else rng.choice(user_actions),
                    "occurred_at": (start + timedelta(minutes=30 + 40 * n)).isoformat(),
                }
            )
    now = datetime.now(UTC)
    return [e for e in events if datetime.fromisoformat(e["occurred_at"]) <= now]


def _run_config(extra: dict | None = None) -> dict:
    return {**QUIET_RUN_CONFIG, **(extra or {})}


def run_job(
    run: DemoRun,
    job_name: str,
    *,
    tags: dict[str, str] | None = None,
    run_config: dict | None = None,
    partition_key: str | None = None,
    partition_range: tuple[str, str] | None = None,
) -> Any:
    """Execute a job of the code location in this process, recorded in the local instance."""
    job = run.defs.resolve_job_def(job_name)
    all_tags = dict(tags or {})
    if partition_range:
        all_tags["dagster/asset_partition_range_start"] = partition_range[0]
        all_tags["dagster/asset_partition_range_end"] = partition_range[1]
    result = job.execute_in_process(
        instance=run.instance,
        run_config=_run_config(run_config),
        tags=all_tags,
        partition_key=partition_key,
        raise_on_error=False,
    )
    run.facts.setdefault("runs", []).append(job_name)
    if not result.success:
        failure = next(
            (e.message for e in result.all_events if e.event_type_value == "STEP_FAILURE"), ""
        )
        raise DemoFailed(f"run {result.run_id} of {job_name} failed: {failure[:400]}")
    return result


def tick_sensor(run: DemoRun, sensor_name: str) -> list[str]:
    """Evaluate a sensor once, as the daemon would: apply its partition requests, then execute
    the runs it requests (in this process, recorded in the local instance)."""
    import dagster as dg

    sensor = run.defs.resolve_sensor_def(sensor_name)
    context = dg.build_sensor_context(
        instance=run.instance, resources=run.defs.resources, definitions=run.defs
    )
    outcome = sensor(context)
    if isinstance(outcome, dg.SensorResult):
        items = list(outcome.run_requests or [])
        for request in outcome.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                run.instance.add_dynamic_partitions(
                    request.partitions_def_name, list(request.partition_keys)
                )
    elif isinstance(outcome, dg.RunRequest):
        items = [outcome]
    elif outcome is None or isinstance(outcome, dg.SkipReason):
        items = []
    else:
        items = list(outcome)
    launched = []
    for request in items:
        if not isinstance(request, dg.RunRequest):
            continue
        job_name = request.job_name or sensor.job_name
        run_job(
            run,
            job_name,
            tags=dict(request.tags),
            run_config=request.run_config,
            partition_key=request.partition_key,
        )
        launched.append(job_name)
    return launched


# --- steps ------------------------------------------------------------------------------------


def start_warehouse(run: DemoRun) -> str:
    from orchestration.instance import write_instance
    from orchestration.runtime import warehouse_url

    run.database_url = warehouse_url(run.settings)
    write_instance(run.settings)
    return run.database_url


def load_dagster(run: DemoRun) -> str:
    import dagster as dg

    from orchestration.definitions import defs

    run.instance = run.stack.enter_context(dg.DagsterInstance.get())
    run.defs = defs
    return f"instance {run.settings.dagster_home}, {len(defs.resolve_all_asset_keys())} assets"


def _preferred_port_file(run: DemoRun) -> Path:
    return run.settings.home / "demo" / "sandbox.port"


def start_sandbox(run: DemoRun) -> str:
    """The sandbox on the port the last demo used (the desk stores its URL), else a free one."""
    from sandbox.server import SandboxConfig, build_app, start_in_thread
    from sandbox.zendesk import DEFAULT_ACCOUNT, RateLimits, ZendeskSandbox

    now = int(demo_now().timestamp())
    account = ZendeskSandbox(
        seed=DEMO_SEED,
        tickets=DEMO_TICKETS,
        comments_per_ticket=3.0,
        rate_limits=RateLimits(None, None),
        now=now,
    )
    config = SandboxConfig(seed=DEMO_SEED, tickets=DEMO_TICKETS, rate_limits=False)
    config.extra["zendesk_accounts"] = {DEFAULT_ACCOUNT: account}
    app = build_app(config)
    port_file = _preferred_port_file(run)
    preferred = int(port_file.read_text()) if port_file.exists() else 0
    try:
        run.sandbox_url, stop = start_in_thread(app, port=preferred)
    except OSError:  # taken by something else since: any free port, the desk is re-pointed
        run.sandbox_url, stop = start_in_thread(app)
    run.stack.callback(stop)
    port_file.parent.mkdir(parents=True, exist_ok=True)
    port_file.write_text(run.sandbox_url.rsplit(":", 1)[1])
    return f"{run.sandbox_url} ({DEMO_TICKETS} Zendesk tickets)"


def start_webhooks(run: DemoRun) -> str:
    """The webhook service, verifying with freshly generated provider keys (as configured in a
    deployment). SES arrives through SNS, whose signing certificate only AWS can serve: the
    service fetches it from a stand-in here, the one part not real."""
    from sandbox.email_events import ProviderKeys
    from webhooks.app import build_service, create_app, serve_in_thread

    keys = ProviderKeys.generate()
    os.environ.update(keys.env())
    settings = Settings.from_env()
    service = build_service(settings)

    def aws_fetch(url: str) -> bytes:
        if url == keys.sns_certificate_url:
            return keys.sns_certificate_pem
        return b"<ConfirmSubscriptionResponse/>"

    service.extras["aws_fetch"] = aws_fetch
    run.provider_keys = keys
    run.webhooks_url = run.stack.enter_context(serve_in_thread(create_app(service)))
    return f"{run.webhooks_url} (Mailgun, SendGrid and SES keys configured)"


def _connection(run: DemoRun):
    from resources.warehouse import get_pool

    return get_pool(run.database_url).connection()


def register_desk(run: DemoRun) -> str:
    from assets.desks import DeskError, add_desk, get_desk
    from resources.secrets import SecretBox
    from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_TOKEN

    box = SecretBox.from_settings(run.settings.secret_key, run.settings.home)
    with _connection(run) as conn:
        try:
            desk = get_desk(conn, DEMO_DESK)
        except DeskError:
            desk = add_desk(
                conn,
                box,
                name=DEMO_DESK,
                subdomain="demo",
                token=SANDBOX_TOKEN,
                email=SANDBOX_EMAIL,
                base_url=run.sandbox_url,
                tenant_id=DEMO_TENANT,
            )
            return f"desk {desk.name} added (tenant {desk.tenant_id}, token stored encrypted)"
        if desk.base_url != run.sandbox_url:
            conn.execute(
                "update control.desks set base_url = %s where desk_id = %s",
                (run.sandbox_url, desk.desk_id),
            )
            return f"desk {desk.name} already registered; pointed at {run.sandbox_url}"
    return f"desk {desk.name} already registered"


def sync_desk(run: DemoRun) -> str:
    from orchestration.instance import DESK_TAG

    launched = tick_sensor(run, "desk_sync_sensor")
    how = "desk_sync_sensor launched the sync"
    if not launched:  # synced moments ago by the last demo: an incremental sync, on demand
        run_job(run, "zendesk_desk_sync", partition_key=DEMO_DESK, tags={DESK_TAG: DEMO_DESK})
        how = "desk not due yet; incremental sync run on demand"
    counts = row_counts(
        run.database_url,
        ("raw.zendesk_tickets", "raw.zendesk_users", "raw.zendesk_ticket_comments"),
    )
    return f"{how}: " + ", ".join(f"{n} {t.split('.')[1]}" for t, n in counts.items())


def ingest_activities(run: DemoRun) -> str:
    events = demo_activities(DEMO_TENANT, demo_now().date(), DEMO_TICKETS)
    run.defs.resources["queues"].send("activities", events)
    launched = tick_sensor(run, "activities_queue_sensor")
    count = row_counts(run.database_url, ("raw.activities",)).get("raw.activities", 0)
    return (
        f"published {len(events)} activity events; activities_queue_sensor launched "
        f"{', '.join(launched) or 'nothing'}; raw.activities has {count} rows"
    )


def email_delivery(run: DemoRun) -> str:
    import httpx

    from sandbox.email_events import EmailEventGenerator

    generator = EmailEventGenerator(run.provider_keys, seed=DEMO_SEED)
    scenario = generator.scenario(
        [DEMO_TENANT], DEMO_NOTIFICATIONS, demo_now(), days=DEMO_DAYS, never_sent=1
    )
    queues = run.defs.resources["queues"]
    queues.send("email_sent", scenario.notifications)
    tick_sensor(run, "email_sent_queue_sensor")
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=run.webhooks_url, timeout=30) as client:
        for request in scenario.requests:
            response = client.post(request.path, headers=request.headers, content=request.body)
            statuses[response.status_code] += 1
    if set(statuses) - {200, 201, 202, 204}:
        raise DemoFailed(f"the webhook service refused signed webhooks: {dict(statuses)}")
    # receipts that came before their notification wait as orphans until it arrives
    queues.send("email_sent", scenario.late_notifications)
    launched = []
    for sensor in ("email_events_router_sensor", "email_receipts_queue_sensor"):
        launched += tick_sensor(run, sensor)
    launched += tick_sensor(run, "email_sent_queue_sensor")
    return (
        f"{len(scenario.notifications) + len(scenario.late_notifications)} sent emails, "
        f"{len(scenario.requests)} signed webhooks over HTTP (all {'/'.join(map(str, statuses))}),"
        f" runs: {', '.join(launched)}"
    )


def build_marts(run: DemoRun) -> str:
    import dagster as dg

    from assets.analytics import analytics_dbt_models

    # dagster-dbt echoes dbt's log lines to stdout; keep them in a file instead
    log_path = run.settings.home / "logs" / "demo-dbt.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log, contextlib.redirect_stdout(log):
        result = dg.materialize(
            [analytics_dbt_models],
            instance=run.instance,
            resources=run.defs.resources,
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
    checks = [
        event.asset_check_evaluation_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    failed = [c.check_name for c in checks if not c.passed]
    if not result.success or failed:
        raise DemoFailed(
            f"dbt build failed (run {result.run_id}, log {log_path}); "
            f"failed tests: {', '.join(failed) or 'none'}"
        )
    run.facts["dbt_tests"] = len(checks)
    models = len(result.get_asset_materialization_events())
    return f"{models} models built, {len(checks)} dbt tests passed"


STEPS: list[tuple[str, Callable[[DemoRun], str]]] = [
    ("warehouse: embedded PostgreSQL, migrations, Dagster instance", start_warehouse),
    ("Dagster definitions", load_dagster),
    ("sandbox APIs (Zendesk, Discourse)", start_sandbox),
    ("webhook service", start_webhooks),
    ("register the Zendesk desk", register_desk),
    ("tickets: desk sync sensor -> tickets, users, comments", sync_desk),
    ("activities: publish events -> queue sensor -> drain", ingest_activities),
    ("email delivery: sent emails, signed webhooks -> router -> receipts", email_delivery),
    ("dbt build: staging views, analytics marts, tests", build_marts),
]


# --- summary ----------------------------------------------------------------------------------


def print_summary(run: DemoRun) -> None:
    echo = run.echo
    echo("")
    echo("Rows per table")
    for table, count in row_counts(run.database_url).items():
        echo(f"  {table:<36}{count:>8}")
    echo("")
    echo("For analysts (read-only role supportflow_analyst on schema analytics):")
    echo(f"  psql '{run.database_url}'")
    for line in ANALYST_SQL.splitlines():
        echo(f"  {line}")
    echo("")
    echo("Explore the assets, runs and checks in the Dagster UI: make dev (http://127.0.0.1:3000)")


# Dagster logs every event to the console; the demo prints its own progress instead.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_demo(settings: Settings, echo: Callable[[str], None] = click.echo) -> DemoRun:
    """Run every step, printing progress; raises DemoFailed naming the step that failed."""
    run = DemoRun(settings=settings, echo=echo)
    echo(f"supportflow demo (SUPPORTFLOW_HOME={settings.home})")
    started = time.monotonic()
    with run.stack, warnings.catch_warnings():
        # beta/preview notices from Dagster APIs the domains use are not news to a demo viewer
        warnings.simplefilter("ignore")
        for number, (title, step) in enumerate(STEPS, start=1):
            prefix = f"[{number:>2}/{len(STEPS)}] {title}"
            echo(f"{prefix} ...")
            step_started = time.monotonic()
            try:
                detail = step(run)
            except DemoFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - reported with the step's name
                raise DemoFailed(f"step '{title}' failed: {type(exc).__name__}: {exc}") from exc
            echo(f"        ok in {time.monotonic() - step_started:.1f}s: {detail}")
        print_summary(run)
    echo(f"\ndemo finished in {time.monotonic() - started:.0f}s; run it again any time.")
    return run

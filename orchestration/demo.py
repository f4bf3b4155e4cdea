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

from resources.settings import Settings, set_process_environ

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_TENANT = "demo"
DEMO_DESK = "demo-desk"
DEMO_SEED = 7
DEMO_TICKETS = 40
DEMO_DAYS = 7  # the backfill: the last 7 whole days
DEMO_NOTIFICATIONS = 36
DEMO_WORKSPACE = "demo"
DEMO_FORUM_POSTS = 60
DEMO_PUSHED_FEEDBACK = 24
# Conversations: a generated stream of channel messages over the backfill days; the last message
# is sent 36 h before the demo's clock and agents act 26 h before it, so their solved and pending
# tickets are due for closure (24 h) when the demo runs the closure job; a second round of
# actions an hour before the clock leaves tickets solved, pending and in follow-up, not yet due.
DEMO_CONVERSATION_AUTHORS = 150
DEMO_CONVERSATION_MESSAGES = 1500
DEMO_CONVERSATIONS_QUIET_HOURS = 36
DEMO_AGENTS_ACT_HOURS_AGO = 26
DEMO_WORK_QUEUES: dict[str, tuple[int, dict[str, Any]]] = {
    # name: (priority, condition)
    "urgent": (
        30,
        {
            "any": [
                {"field": "priority", "op": "in", "value": ["high", "urgent"]},
                {"field": "tags", "op": "contains", "value": "vip"},
            ]
        },
    ),
    "unhappy": (20, {"field": "sentiment", "op": "eq", "value": "negative"}),
    "social": (
        10,
        {"field": "channel", "op": "in", "value": ["facebook", "instagram", "x", "linkedin"]},
    ),
    "private-channels": (
        10,
        {"not": {"field": "channel", "op": "in", "value": ["facebook", "instagram", "x"]}},
    ),
}

# Tables in the summary, in the order data flows through them.
SUMMARY_TABLES = (
    "raw.zendesk_tickets",
    "raw.zendesk_users",
    "raw.zendesk_ticket_comments",
    "raw.activities",
    "raw.notifications",
    "raw.delivery_events",
    "raw.feedback_items",
    "raw.conversation_threads",
    "raw.conversation_tickets",
    "raw.conversation_messages",
    "raw.ticket_state_changes",
    "raw.work_queue_members",
    "analytics.template_stats_daily",
    "analytics.insight_reports",
    "analytics.queue_counters",
    "analytics.conversation_daily",
    "analytics.fct_tickets",
    "analytics.fct_ticket_comments",
    "analytics.agg_activity_daily",
    "analytics.fct_notifications",
    "analytics.template_delivery_7d",
    "analytics.agg_feedback_daily",
    "analytics.fct_conversation_tickets",
    "analytics.agg_conversation_daily",
)

# A login role in the read-only analyst role, for the summary's psql hint.
DEMO_ANALYST = "supportflow_demo_analyst"

ANALYST_SQL = """\
-- first reply and resolution times per group
select group_name, count(*) as tickets,
       percentile_cont(0.5) within group (order by first_reply_minutes) as median_first_reply_min,
       percentile_cont(0.5) within group (order by full_resolution_minutes) as median_resolution_min
from analytics.fct_tickets where tenant_id = 'demo' group by group_name order by tickets desc;

-- delivery rate per template, the last 7 days plus today
select template_id, sent, delivered, permanent_failures, delivery_rate
from analytics.template_delivery_7d where tenant_id = 'demo' order by sent desc;

-- conversations per channel: tickets, median first response, reopens, ratings
select channel, count(*) as tickets,
       percentile_cont(0.5) within group (order by first_response_seconds) as median_response_s,
       sum(reopen_count) as reopens, round(avg(star_rating), 2) as avg_stars
from analytics.fct_conversation_tickets where tenant_id = 'demo'
group by channel order by tickets desc;"""


def analyst_url(database_url: str) -> str:
    """`database_url` with the demo's read-only login instead of its user (and no password)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(database_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{DEMO_ANALYST}@{host}"))


@dataclass
class DemoRun:
    """What the steps share: settings, the Dagster instance and definitions, service URLs."""

    settings: Settings
    echo: Callable[[str], None]
    instance: Any = None
    defs: Any = None
    daemon: Any = None
    database_url: str = ""
    sandbox_url: str = ""
    webhooks_url: str = ""
    provider_keys: Any = None
    facts: dict[str, Any] = field(default_factory=dict)
    conversation_messages: int = DEMO_CONVERSATION_MESSAGES
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
    cutoff = demo_now()
    return [e for e in events if datetime.fromisoformat(e["occurred_at"]) <= cutoff]


def check_runs(runs: list[Any], launcher: str) -> list[str]:
    """The jobs of `runs` (what `launcher` launched), once each succeeded; DemoFailed names the
    first that did not."""
    for dagster_run in runs:
        if dagster_run.status.value != "SUCCESS":
            raise DemoFailed(
                f"run {dagster_run.run_id} of {dagster_run.job_name} ({launcher}) ended "
                f"{dagster_run.status.value}; see it in the Dagster UI (make dev)"
            )
    return [dagster_run.job_name for dagster_run in runs]


def tick_sensor(run: DemoRun, sensor_name: str) -> list[str]:
    """One tick of a sensor, taken by the daemon's code: the runs it requests are launched with
    the sensor's tags and the code location's origin (orchestration/local_daemon.py)."""
    runs = run.daemon.tick_sensor(sensor_name)
    run.facts.setdefault("runs", []).extend(runs)
    return check_runs(runs, f"sensor {sensor_name}")


def tick_schedule(run: DemoRun, schedule_name: str) -> list[Any]:
    """A tick of a schedule now (its cron time need not have come), taken by the scheduler's
    code: its runs carry the schedule's tags."""
    runs = run.daemon.tick_schedule(schedule_name)
    run.facts.setdefault("runs", []).extend(runs)
    check_runs(runs, f"schedule {schedule_name}")
    return runs


# --- steps ------------------------------------------------------------------------------------


def start_warehouse(run: DemoRun) -> str:
    """The warehouse, the Dagster instance, and a login role in the read-only analyst role (the
    one the summary's psql hint uses)."""
    import psycopg

    from orchestration.instance import write_instance
    from resources.runtime import warehouse_url

    run.database_url = warehouse_url(run.settings)
    write_instance(run.settings)
    with psycopg.connect(run.database_url, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_roles where rolname = %s", (DEMO_ANALYST,))
        if exists.fetchone() is None:
            conn.execute(
                psycopg.sql.SQL("create role {} login in role supportflow_analyst").format(
                    psycopg.sql.Identifier(DEMO_ANALYST)
                )
            )
    return run.database_url


def load_dagster(run: DemoRun) -> str:
    """The instance (runs executed here as they are launched) and the code location loaded as
    the daemon loads it, so every run the demo makes is the daemon's kind of run."""
    from orchestration.definitions import defs
    from orchestration.local_daemon import LocalDaemon, code_location_workspace, demo_instance

    run.instance = run.stack.enter_context(demo_instance(run.settings.dagster_home))
    # one process, many runs: keep a pooled storage connection instead of one per event write
    run.instance.optimize_for_webserver(statement_timeout=60_000, pool_recycle=3600, max_overflow=4)
    run.defs = defs
    workspace = run.stack.enter_context(code_location_workspace(run.instance, PROJECT_ROOT))
    run.daemon = LocalDaemon(workspace)
    return f"instance {run.settings.dagster_home}, {len(defs.resolve_all_asset_keys())} assets"


def demo_sandbox(now: datetime) -> Any:
    """The demo's sandbox (its Zendesk account and Discourse forum as of `now`), not started."""
    from sandbox.discourse import DiscourseForum
    from sandbox.server import SandboxConfig
    from sandbox.zendesk import DEFAULT_ACCOUNT, RateLimits, ZendeskSandbox

    account = ZendeskSandbox(
        seed=DEMO_SEED,
        tickets=DEMO_TICKETS,
        comments_per_ticket=3.0,
        rate_limits=RateLimits(None, None),
        now=int(now.timestamp()),
    )
    forum = DiscourseForum(seed=DEMO_SEED, posts=DEMO_FORUM_POSTS, days=DEMO_DAYS, end=now)
    config = SandboxConfig(seed=DEMO_SEED, tickets=DEMO_TICKETS, rate_limits=False)
    config.extra["zendesk_accounts"] = {DEFAULT_ACCOUNT: account}
    config.extra["discourse_forum"] = forum
    return config


def sandbox_port_file(settings: Settings) -> Path:
    """Where the demo keeps its sandbox's port: its desk and forum are registered at it, and
    `supportflow dev` serves the sandbox there again (the file says a demo ran in this home)."""
    return settings.home / "demo" / "sandbox.port"


def serve_sandbox(config: Any, port_file: Path) -> tuple[str, Callable[[], None]]:
    """The sandbox on the port in `port_file` (the last demo's), else a free one, recorded."""
    from sandbox.server import build_app, start_in_thread

    app = build_app(config)
    preferred = int(port_file.read_text()) if port_file.exists() else 0
    try:
        url, stop = start_in_thread(app, port=preferred)
    except OSError:  # taken by something else since: any free port, the desk is re-pointed
        url, stop = start_in_thread(app)
    port_file.parent.mkdir(parents=True, exist_ok=True)
    port_file.write_text(url.rsplit(":", 1)[1])
    return url, stop


def start_sandbox(run: DemoRun) -> str:
    """The sandbox on the port the last demo used (the desk stores its URL), else a free one."""
    run.sandbox_url, stop = serve_sandbox(demo_sandbox(demo_now()), sandbox_port_file(run.settings))
    run.stack.callback(stop)
    return f"{run.sandbox_url} ({DEMO_TICKETS} Zendesk tickets, {DEMO_FORUM_POSTS} forum posts)"


def start_webhooks(run: DemoRun) -> str:
    """The webhook service, verifying with freshly generated provider keys (as configured in a
    deployment). SES arrives through SNS, whose signing certificate only AWS can serve: the
    service fetches it from a stand-in here, the one part not real."""
    from sandbox.email_events import ProviderKeys
    from webhooks.app import create_app, serve_in_thread

    run.provider_keys = ProviderKeys.generate()
    service = webhook_service(run.provider_keys)
    run.webhooks_url = run.stack.enter_context(serve_in_thread(create_app(service)))
    return f"{run.webhooks_url} (Mailgun, SendGrid and SES keys configured)"


def webhook_service(keys: Any) -> Any:
    """The webhook service verifying with `keys` (set in this process's environment, as a
    deployment configures them) and fetching SNS's certificate from the stand-in."""
    from webhooks.app import build_service

    set_process_environ(keys.env())
    service = build_service(Settings.from_env())

    def aws_fetch(url: str) -> bytes:
        if url == keys.sns_certificate_url:
            return keys.sns_certificate_pem
        return b"<ConfirmSubscriptionResponse/>"

    service.extras["aws_fetch"] = aws_fetch
    return service


def _connection(run: DemoRun):
    from resources.warehouse import get_pool

    return get_pool(run.database_url).connection()


def register_desk(run: DemoRun) -> str:
    from assets.tickets.desks import DeskError, add_desk, get_desk
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
    launched = tick_sensor(run, "desk_sync_sensor")
    how = "desk_sync_sensor launched the sync"
    if not launched:  # synced moments ago by the last demo: the sensor waits for its interval
        how = "desk_sync_sensor: desk synced moments ago, not due yet"
    counts = row_counts(
        run.database_url,
        ("raw.zendesk_tickets", "raw.zendesk_users", "raw.zendesk_ticket_comments"),
    )
    return f"{how}: " + ", ".join(f"{n} {t.split('.')[1]}" for t, n in counts.items())


def ingest_activities(run: DemoRun) -> str:
    from assets.activities.rules import activity_key

    events = demo_activities(DEMO_TENANT, demo_now().date(), DEMO_TICKETS)
    run.defs.resources["queues"].send("activities", events, dedup_key=activity_key)
    launched = tick_sensor(run, "activities_queue_sensor")
    count = row_counts(run.database_url, ("raw.activities",)).get("raw.activities", 0)
    return (
        f"published {len(events)} activity events; activities_queue_sensor launched "
        f"{', '.join(launched) or 'nothing'}; raw.activities has {count} rows"
    )


def email_delivery(run: DemoRun) -> str:
    """Sent emails on queue `email_sent`, then the providers' signed webhooks over HTTP (some for
    emails whose `email_sent` message is published only afterwards, as happens when the helpdesk
    lags), then the sensors: sent emails, router, receipts."""
    import httpx

    from assets.email.rules import notification_key
    from sandbox.email_events import EmailEventGenerator

    generator = EmailEventGenerator(run.provider_keys, seed=DEMO_SEED)
    scenario = generator.scenario(
        [DEMO_TENANT], DEMO_NOTIFICATIONS, demo_now(), days=DEMO_DAYS, never_sent=0
    )
    queues = run.defs.resources["queues"]
    queues.send("email_sent", scenario.notifications, dedup_key=notification_key)
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=run.webhooks_url, timeout=30) as client:
        for request in scenario.requests:
            response = client.post(request.path, headers=request.headers, content=request.body)
            statuses[response.status_code] += 1
    if set(statuses) - {200, 201, 202, 204}:
        raise DemoFailed(f"the webhook service refused signed webhooks: {dict(statuses)}")
    queues.send("email_sent", scenario.late_notifications, dedup_key=notification_key)
    launched = []
    for sensor in (
        "email_sent_queue_sensor",
        "email_events_router_sensor",
        "email_receipts_queue_sensor",
    ):
        launched += tick_sensor(run, sensor)
    return (
        f"{len(scenario.notifications) + len(scenario.late_notifications)} sent emails, "
        f"{len(scenario.requests)} signed webhooks over HTTP (HTTP "
        f"{'/'.join(map(str, sorted(statuses)))}), runs: {', '.join(launched) or 'none'}"
    )


def demo_conversation_stream(now: datetime, messages: int = DEMO_CONVERSATION_MESSAGES) -> Any:
    """The demo tenant's channels: six origins, customers writing over the backfill days until
    DEMO_CONVERSATIONS_QUIET_HOURS before `now`. Message and event ids depend on the seed only,
    so a later demo re-sends the same messages and nothing changes twice."""
    from sandbox.conversations import ConversationStream

    start = now - timedelta(days=DEMO_DAYS)
    quiet = timedelta(hours=DEMO_CONVERSATIONS_QUIET_HOURS)
    return ConversationStream(
        seed=DEMO_SEED,
        tenants=(DEMO_TENANT,),
        origins_per_tenant=6,
        # as many messages per customer however many messages: 10 each by default
        authors=max(1, round(messages * DEMO_CONVERSATION_AUTHORS / DEMO_CONVERSATION_MESSAGES)),
        messages=messages,
        start=start,
        days=(now - quiet - start) / timedelta(days=1),
    )


def register_conversations(run: DemoRun) -> str:
    """The demo tenant's origins (one per channel) and its work queues, each added once."""
    from assets.conversations.store import (
        add_origin,
        list_origins,
        list_work_queues,
        save_work_queue,
    )

    stream = demo_conversation_stream(demo_now(), run.conversation_messages)
    added = []
    with _connection(run) as conn:
        known = {origin.ref for origin in list_origins(conn, DEMO_TENANT)}
        for origin in stream.origins():
            if origin.ref not in known:
                add_origin(conn, origin.tenant_id, origin.name, origin.channel, origin.ref)
                added.append(f"origin {origin.name} ({origin.channel})")
        queues = {queue.name for queue in list_work_queues(conn, DEMO_TENANT)}
        for name, (priority, condition) in DEMO_WORK_QUEUES.items():
            if name not in queues:
                save_work_queue(
                    conn, DEMO_TENANT, name, condition=condition, priority=priority, create=True
                )
                added.append(f"work queue {name}")
    return f"tenant {DEMO_TENANT}: " + (", ".join(added) if added else "already registered")


def ingest_conversations(run: DemoRun) -> str:
    """Channel messages on queue `messages` (duplicates, reordering, moderation included), the
    queue sensor's drain; then agents' actions on the first tickets on `conversation_events`
    and its sensor's drain; then the closure job, as its schedule would run it."""
    from orchestration.message_keys import message_key

    now = demo_now()
    stream = demo_conversation_stream(now, run.conversation_messages)
    queues = run.defs.resources["queues"]
    bodies = stream.messages()
    queues.send("messages", bodies, dedup_key=message_key("messages"))
    launched = tick_sensor(run, "conversation_messages_queue_sensor")
    threads = len(stream.truth().threads())
    with _connection(run) as conn:
        sequences = [
            row[0]
            for row in conn.execute(
                "select sequence from raw.conversation_tickets"
                " where tenant_id = %s and sequence <= %s order by sequence",
                (DEMO_TENANT, threads),
            ).fetchall()
        ]
    tickets = [(DEMO_TENANT, n) for n in sequences]
    events = stream.events_for(tickets, now - timedelta(hours=DEMO_AGENTS_ACT_HOURS_AGO))
    events += stream.events_for(tickets, now - timedelta(hours=1), wave=1)
    queues.send("conversation_events", events, dedup_key=message_key("conversation_events"))
    launched += tick_sensor(run, "conversation_events_queue_sensor")
    launched += [r.job_name for r in tick_schedule(run, "conversation_closure_every_2_minutes")]
    dead = sum(len(queues.dead_letters(name)) for name in ("messages", "conversation_events"))
    if dead:
        raise DemoFailed(f"{dead} conversation messages or events were dead-lettered")
    return (
        f"published {len(bodies)} channel messages ({stream.truth().duplicates} re-sent) and "
        f"{len(events)} agent actions on {len(sequences)} tickets; runs: {', '.join(launched)}"
    )


def demo_feedback(today: date, count: int = DEMO_PUSHED_FEEDBACK) -> list[dict]:
    """Feedback a product pushes to the webhook over the backfill days, with fixed ids."""
    from sandbox.feedback_text import feedback_text, username

    rng = random.Random(f"{DEMO_SEED}:feedback")
    days = backfill_days(today)
    items = []
    for n in range(count):
        day = days[n % len(days)]
        piece = feedback_text(rng)
        created = datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(minutes=n)
        items.append(
            {
                "external_id": f"demo-push-{day.isoformat()}-{n}",
                "text": piece.text,
                "author": username(rng),
                "created_at": created.isoformat(),
                "rating": None,
                "metadata": {"channel": "in-app"},
            }
        )
    return items


def register_workspace(run: DemoRun) -> str:
    """Workspace `demo` with a Discourse forum (the sandbox), the demo desk's tickets, the
    tenant's conversations and a webhook; the webhook's bearer token is issued afresh for this
    run (only its hash is kept)."""
    from assets.feedback.rules import SourceRef
    from assets.feedback.sources import source_kind
    from assets.feedback.store import (
        WorkspaceError,
        add_source,
        create_workspace,
        get_workspace,
        issue_webhook_token,
        list_sources,
    )

    since = backfill_days(demo_now().date())[0].isoformat()
    wanted = {
        "forum": ("discourse", {"base-url": run.sandbox_url, "since": since}),
        "tickets": ("zendesk", {"desk": (DEMO_DESK,)}),
        "conversations": ("conversations", {}),
        "push": ("webhook", {}),
    }
    with _connection(run) as conn:
        try:
            workspace = get_workspace(conn, DEMO_WORKSPACE)
            created = False
        except WorkspaceError:
            workspace = create_workspace(conn, DEMO_WORKSPACE, DEMO_TENANT)
            created = True
        existing = {s.name: s for s in list_sources(conn, DEMO_WORKSPACE, active_only=False)}
        added = []
        for name, (kind, options) in wanted.items():
            if name in existing:
                continue
            config = source_kind(kind).build_config(options)
            source_id = add_source(conn, workspace, name, kind, config)
            ref = SourceRef(
                source_id, workspace.workspace_id, workspace.name, workspace.tenant_id,
                name, kind, config, {},
            )  # fmt: skip
            source_kind(kind).after_create(conn, ref)
            added.append(f"added {name} ({kind})")
        forum = existing.get("forum")
        if forum is not None and forum.config.get("base_url") != run.sandbox_url:
            added.append(f"forum pointed at {run.sandbox_url}")
            conn.execute(
                "update control.feedback_sources"
                " set config = jsonb_set(config, '{base_url}', to_jsonb(%s::text))"
                " where source_id = %s",
                (run.sandbox_url, forum.source_id),
            )
        run.facts["webhook_token"] = issue_webhook_token(conn, workspace.workspace_id)
    state = "created" if created else "already there"
    return f"workspace {DEMO_WORKSPACE} {state}; sources: {', '.join(added) or 'unchanged'}"


def ingest_feedback(run: DemoRun) -> str:
    import httpx

    items = demo_feedback(demo_now().date())
    with httpx.Client(base_url=run.webhooks_url, timeout=30) as client:
        response = client.post(
            f"/webhooks/feedback/{DEMO_WORKSPACE}",
            json=items,
            headers={"Authorization": f"Bearer {run.facts.pop('webhook_token')}"},
        )
    if response.status_code // 100 != 2:
        raise DemoFailed(f"pushing feedback got HTTP {response.status_code}: {response.text}")
    drained = tick_sensor(run, "feedback_queue_sensor") or ["nothing (all seen before)"]
    # the pull of the 15-minute schedule: the forum, the desk's tickets, conversations
    tick_schedule(run, "feedback_pull_schedule")
    with _connection(run) as conn:
        by_source = dict(
            conn.execute(
                "select i.source, count(*) from raw.feedback_items i"
                " join control.workspaces w using (workspace_id) where w.name = %s group by 1",
                (DEMO_WORKSPACE,),
            ).fetchall()
        )
    return (
        f"pushed {len(items)} items over HTTP; feedback_queue_sensor drained with "
        f"{', '.join(drained)}; feedback_pull_schedule pulled and enriched; items by source: "
        + ", ".join(f"{source} {n}" for source, n in sorted(by_source.items()))
    )


# The daily-partitioned assets the demo backfills, one Dagster backfill each (their partitions
# definitions differ in their first day, so one backfill cannot hold them all).
BACKFILLED_ASSETS = ("activity_export", "template_stats", "conversation_daily", "insight_reports")


def backfill(run: DemoRun) -> str:
    """The last 7 whole days of every daily-partitioned asset, as Dagster backfills (what the
    UI's "Materialize" over a range of days launches), processed by the backfill daemon's code:
    their backfill policies decide the runs (a range per run, or a run per day)."""
    import dagster as dg

    days = [d.isoformat() for d in backfill_days(demo_now().date())]
    done = []
    for asset in BACKFILLED_ASSETS:
        backfill_id = run.daemon.backfill(
            [dg.AssetKey(asset)], days, title=f"demo: {asset} {days[0]} .. {days[-1]}"
        )
        runs = run.daemon.backfill_runs(backfill_id)
        run.facts.setdefault("runs", []).extend(runs)
        run.facts.setdefault("backfills", []).append(backfill_id)
        check_runs(runs, f"backfill {backfill_id}")
        done.append(f"{asset} ({backfill_id}, {len(runs)} run{'s' if len(runs) != 1 else ''})")
    return f"{days[0]} .. {days[-1]}: " + ", ".join(done)


def maintenance(run: DemoRun) -> str:
    """A tick of each schedule that runs daily or hourly: partitions ahead, retention,
    freshness, the queue ledger."""
    schedules = (
        "activity_partition_maintenance_hourly",
        "activity_retention_daily",
        "notification_retention_schedule",
        "desk_freshness_check_schedule",
        "queue_maintenance_daily",
    )
    jobs = [r.job_name for name in schedules for r in tick_schedule(run, name)]
    return ", ".join(jobs)


def build_marts(run: DemoRun) -> str:
    # dagster-dbt echoes dbt's log lines to stdout; keep them in a file instead
    log_path = run.settings.home / "logs" / "demo-dbt.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log, contextlib.redirect_stdout(log):
        try:
            (result,) = tick_schedule(run, "analytics_marts_hourly")
        except DemoFailed as exc:
            raise DemoFailed(f"{exc} (dbt log: {log_path})") from None
    import dagster as dg

    def events(kind: dg.DagsterEventType) -> list[Any]:
        return [e.dagster_event for e in run.instance.all_logs(result.run_id, of_type=kind)]

    checks = [
        e.asset_check_evaluation_data for e in events(dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    ]
    failed = [c.check_name for c in checks if not c.passed]
    if failed:
        raise DemoFailed(f"dbt tests failed: {', '.join(failed)} (dbt log: {log_path})")
    models = len(events(dg.DagsterEventType.ASSET_MATERIALIZATION))
    return f"{models} models built, {len(checks)} dbt tests passed (log {log_path})"


STEPS: list[tuple[str, Callable[[DemoRun], str]]] = [
    ("warehouse: embedded PostgreSQL, migrations, Dagster instance", start_warehouse),
    ("Dagster definitions", load_dagster),
    ("sandbox APIs (Zendesk, Discourse)", start_sandbox),
    ("webhook service", start_webhooks),
    ("register the Zendesk desk", register_desk),
    ("tickets: desk sync sensor -> tickets, users, comments", sync_desk),
    ("activities: publish events -> queue sensor -> drain", ingest_activities),
    ("email delivery: sent emails, signed webhooks -> router -> receipts", email_delivery),
    ("register the conversation origins and work queues", register_conversations),
    (
        "conversations: messages and agent actions -> queue sensors -> drains; closure",
        ingest_conversations,
    ),
    ("register the feedback workspace and its sources", register_workspace),
    ("feedback: push over HTTP, pull forum, tickets and conversations, enrich", ingest_feedback),
    ("backfill the last 7 days of daily partitions", backfill),
    ("maintenance: partitions ahead, retention, freshness check, queue ledger", maintenance),
    ("dbt build: staging views, analytics marts, tests", build_marts),
]


# --- summary ----------------------------------------------------------------------------------


def template_statistics(database_url: str, tenant: str = DEMO_TENANT) -> list[tuple]:
    """The dashboard's "last 7 days plus today" per template (analytics.template_delivery_7d)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            "select template_id, sent, delivered, temporary_failures, permanent_failures,"
            " technical_failures, in_flight, delivery_rate from analytics.template_delivery_7d"
            " where tenant_id = %s order by sent desc, template_id",
            (tenant,),
        ).fetchall()


def top_insights(database_url: str, workspace: str = DEMO_WORKSPACE, limit: int = 3) -> dict:
    """The workspace's most talked-about topics over its reports, sentiment and anomalies."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        topics = conn.execute(
            "select t ->> 'topic', sum((t ->> 'items')::int) as items"
            " from analytics.insight_reports r join control.workspaces w using (workspace_id)"
            " cross join lateral jsonb_array_elements(r.top_topics) as t"
            " where w.name = %s and r.source = 'all' group by 1 order by 2 desc, 1 limit %s",
            (workspace, limit),
        ).fetchall()
        days = conn.execute(
            "select count(*), sum(items), round(avg(avg_sentiment)::numeric, 3),"
            " sum(jsonb_array_length(anomalies)), min(day), max(day)"
            " from analytics.insight_reports r join control.workspaces w using (workspace_id)"
            " where w.name = %s and r.source = 'all'",
            (workspace,),
        ).fetchone()
        anomalies = conn.execute(
            "select r.day, a from analytics.insight_reports r"
            " join control.workspaces w using (workspace_id)"
            " cross join lateral jsonb_array_elements(r.anomalies) as a"
            " where w.name = %s and r.source = 'all' order by r.day desc limit %s",
            (workspace, limit),
        ).fetchall()
    return {"topics": topics, "days": days, "anomalies": anomalies}


def conversation_summary(database_url: str, tenant: str = DEMO_TENANT) -> dict[str, Any]:
    """Tickets by state, messages by kind and the work queues' counters of a tenant."""
    import psycopg

    from assets.conversations.store import queue_counts

    with psycopg.connect(database_url, autocommit=True) as conn:
        states = dict(
            conn.execute(
                "select state, count(*) from raw.conversation_tickets where tenant_id = %s"
                " group by state",
                (tenant,),
            ).fetchall()
        )
        kinds = dict(
            conn.execute(
                "select kind, count(*) from raw.conversation_messages"
                " where tenant_id = %s and not shadowed and not deleted group by kind",
                (tenant,),
            ).fetchall()
        )
        causes = dict(
            conn.execute(
                "select cause, count(*) from raw.ticket_state_changes where tenant_id = %s"
                " group by cause",
                (tenant,),
            ).fetchall()
        )
        queues = queue_counts(conn, tenant)
    return {"states": states, "kinds": kinds, "causes": causes, "queues": queues}


def export_locations(settings: Settings) -> dict[str, Any]:
    """Where the activity export files and the insight reports are (local directory or S3)."""
    from resources.runtime import make_export_storage

    storage = make_export_storage(settings)
    reports = storage.list_files(f"insight_reports/{DEMO_WORKSPACE}")
    return {
        "root": settings.export_url,
        "activity_files": storage.list_files("activities"),
        "latest_report": storage.uri(reports[-1]) if reports else None,
    }


def _anomaly_text(anomaly: Any) -> str:
    if isinstance(anomaly, dict):
        kind = anomaly.get("kind") or anomaly.get("type") or "anomaly"
        detail = anomaly.get("topic") or anomaly.get("detail") or anomaly.get("message") or ""
        return f"{kind} {detail}".strip()
    return str(anomaly)


def launchers(runs: list[Any]) -> Counter[str]:
    """Runs by what launched them, from the tags the daemon's code gives them."""
    kinds: Counter[str] = Counter()
    for dagster_run in runs:
        tags = dagster_run.tags
        if "dagster/backfill" in tags:
            kinds["backfill"] += 1
        elif "dagster/sensor_name" in tags:
            kinds["sensor"] += 1
        elif "dagster/schedule_name" in tags:
            kinds["schedule"] += 1
        else:
            kinds["hand"] += 1
    return kinds


def print_summary(run: DemoRun) -> None:
    echo = run.echo
    echo("")
    echo("Rows per table")
    for table, count in row_counts(run.database_url).items():
        echo(f"  {table:<36}{count:>8}")

    echo("")
    echo(f"Template statistics, the last 7 days plus today (tenant {DEMO_TENANT})")
    echo(
        f"  {'template':<14}{'sent':>6}{'delivered':>11}{'temporary':>11}{'permanent':>11}"
        f"{'technical':>11}{'in flight':>11}{'rate':>8}"
    )
    for template, sent, delivered, temp, perm, tech, flight, rate in template_statistics(
        run.database_url
    ):
        echo(
            f"  {template:<14}{sent:>6}{delivered:>11}{temp:>11}{perm:>11}{tech:>11}"
            f"{flight:>11}{float(rate):>8.0%}"
        )

    insights = top_insights(run.database_url)
    reports, items, sentiment, anomaly_count, first, last = insights["days"]
    echo("")
    echo(
        f"Top insights, workspace {DEMO_WORKSPACE} ({reports or 0} daily reports "
        f"{first} .. {last}, {items or 0} items, mean sentiment {sentiment})"
    )
    for topic, count in insights["topics"]:
        echo(f"  {count:>4} items  {topic}")
    echo(f"  anomalies flagged: {anomaly_count or 0}")
    for day, anomaly in insights["anomalies"]:
        echo(f"    {day}: {_anomaly_text(anomaly)}")

    from assets.conversations.rules import STATES

    conversations = conversation_summary(run.database_url)
    states, kinds = conversations["states"], conversations["kinds"]
    echo("")
    echo(
        f"Conversations (tenant {DEMO_TENANT}): {sum(states.values())} tickets, "
        f"{sum(kinds.values())} messages"
    )
    echo(
        "  tickets by state:   " + ", ".join(f"{state} {states.get(state, 0)}" for state in STATES)
    )
    echo("  messages by kind:   " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    echo(
        "  state changes by:   "
        + ", ".join(f"{c} {n}" for c, n in sorted(conversations["causes"].items()))
    )
    echo(f"  {'work queue':<18}{'priority':>9}  tickets per state")
    for name, priority, counts in conversations["queues"]:
        shown = ", ".join(f"{s} {counts[s]}" for s in STATES if s in counts)
        echo(f"  {name:<18}{priority:>9}  {shown or 'empty'}")

    exports = export_locations(run.settings)
    echo("")
    echo(f"Files under {exports['root']}")
    echo(f"  activity exports: {len(exports['activity_files'])} files in activities/tenant=*/")
    echo(f"  latest insight report (HTML): {exports['latest_report']}")

    launched = launchers(run.facts.get("runs", []))
    echo("")
    echo(
        f"Dagster runs this demo launched: {sum(launched.values())}, all succeeded ("
        + ", ".join(f"{n} by {kind}" for kind, n in sorted(launched.items()))
        + f"); backfills: {', '.join(run.facts.get('backfills', [])) or 'none'}"
    )

    echo("")
    echo(f"For analysts (login {DEMO_ANALYST}: read-only role supportflow_analyst, analytics):")
    echo(f"  psql '{analyst_url(run.database_url)}'")
    for line in ANALYST_SQL.splitlines():
        echo(f"  {line}")
    echo("")
    home = run.settings.home
    prefix = "" if home == (Path.cwd() / ".supportflow").resolve() else f"SUPPORTFLOW_HOME={home} "
    echo(
        f"Explore the assets, runs and checks in the Dagster UI: {prefix}make dev "
        "(http://127.0.0.1:3000)"
    )


def run_demo(
    settings: Settings,
    echo: Callable[[str], None] = click.echo,
    conversation_messages: int = DEMO_CONVERSATION_MESSAGES,
) -> DemoRun:
    """Run every step, printing progress; raises DemoFailed naming the step that failed."""
    run = DemoRun(settings=settings, echo=echo, conversation_messages=conversation_messages)
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

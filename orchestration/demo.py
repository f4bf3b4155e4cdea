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
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from orchestration.settings import Settings

DEMO_TENANT = "demo"
DEMO_SEED = 7

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


def start_sandbox(run: DemoRun) -> str:
    from sandbox.server import SandboxConfig, build_app, start_in_thread

    config = SandboxConfig(seed=DEMO_SEED, tickets=40, comments_per_ticket=3.0, rate_limits=False)
    run.sandbox_url, stop = start_in_thread(build_app(config))
    run.stack.callback(stop)
    return run.sandbox_url


def start_webhooks(run: DemoRun) -> str:
    from webhooks.app import build_service, create_app, serve_in_thread

    app = create_app(build_service(run.settings))
    run.webhooks_url = run.stack.enter_context(serve_in_thread(app))
    return run.webhooks_url


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

"""`supportflow demo` on a fresh SUPPORTFLOW_HOME, twice: both finish with the summary, the
second leaves the same tables (re-running is safe), and every run went through Dagster."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

# tables whose content the demo fixes by ids: a second run must leave them as they were
STABLE_TABLES = (
    "raw.zendesk_tickets",
    "raw.zendesk_users",
    "raw.zendesk_ticket_comments",
    "raw.notifications",
    "raw.delivery_events",
    "raw.feedback_items",
    "raw.conversation_threads",
    "raw.conversation_tickets",
    "raw.conversation_messages",
    "analytics.fct_tickets",
    "analytics.fct_ticket_comments",
    "analytics.fct_notifications",
    "analytics.template_delivery_7d",
)


def _supportflow(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTFLOW_", "DAGSTER_"))}
    env["SUPPORTFLOW_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )


def _row_counts(stdout: str) -> dict[str, int]:
    section = stdout.split("Rows per table", 1)[1].split("\n\n", 1)[0]
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(r"^\s+((?:raw|analytics)\.\w+)\s+(\d+)$", section, re.MULTILINE)
    }


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo-home")
    yield home
    _supportflow(home, "db", "stop", timeout=60)


@pytest.fixture(scope="module")
def two_runs(demo_home):
    first = _supportflow(demo_home, "demo")
    second = _supportflow(demo_home, "demo")
    return first, second


@pytest.mark.slow
@pytest.mark.timeout(560)
def test_demo_finishes_with_the_summary(two_runs):
    first, _ = two_runs
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    for heading in (
        "Rows per table",
        "Template statistics, the last 7 days plus today",
        "Top insights, workspace demo",
        "latest insight report (HTML): ",
        "activity exports: ",
        "psql 'postgresql://",
        "from analytics.fct_tickets",
        "Conversations (tenant demo)",
        "tickets by state:",
        "make dev",
    ):
        assert heading in out
    counts = _row_counts(out)
    assert set(STABLE_TABLES) <= set(counts)
    assert all(counts[t] > 0 for t in counts), counts
    report = Path(re.search(r"latest insight report \(HTML\): (\S+)", out).group(1))
    assert report.is_file() and "<html" in report.read_text().lower()
    assert "dbt tests passed" in out


@pytest.mark.slow
@pytest.mark.timeout(560)
def test_second_run_is_safe_and_changes_nothing(two_runs):
    first, second = two_runs
    assert second.returncode == 0, second.stderr[-3000:]
    assert "desk demo-desk already registered" in second.stdout
    assert "workspace demo already there" in second.stdout
    before, after = _row_counts(first.stdout), _row_counts(second.stdout)
    assert {t: after[t] for t in STABLE_TABLES} == {t: before[t] for t in STABLE_TABLES}
    # activities are fixed by id too; only the clock may add today's next events between runs
    assert after["raw.activities"] >= before["raw.activities"]


@pytest.mark.slow
@pytest.mark.timeout(560)
def test_demo_runs_are_recorded_in_the_local_dagster_instance(two_runs, demo_home):
    url = _supportflow(demo_home, "db", "url", timeout=60).stdout.strip()
    dagster_url = url.replace("/supportflow?", "/dagster?")
    with psycopg.connect(dagster_url) as conn:
        statuses = dict(conn.execute("select status, count(*) from runs group by 1").fetchall())
        jobs = {row[0] for row in conn.execute("select distinct pipeline_name from runs")}
    assert set(statuses) == {"SUCCESS"}, statuses
    assert {
        "zendesk_desk_sync",
        "activities_drain",
        "email_receipts_drain",
        "activity_export_daily",
        "template_stats_daily",
        "insight_reports_job",
        "feedback_pull_job",
        "conversation_messages_drain",
        "conversation_events_drain",
        "conversation_closure",
        "conversation_daily_job",
    } <= jobs


@pytest.mark.slow
@pytest.mark.timeout(560)
def test_demo_marts_agree_with_the_pipelines_tables(two_runs, demo_home):
    """The marts were built from what the pipelines wrote: live tickets one to one, and the
    dbt "7 days plus today" per template equals the email domain's own daily statistics for the
    7 whole days plus today's notifications (two independent implementations)."""
    url = _supportflow(demo_home, "db", "url", timeout=60).stdout.strip()
    with psycopg.connect(url) as conn:
        live = conn.execute(
            "select count(*) from raw.zendesk_tickets where not is_deleted"
        ).fetchone()[0]
        assert conn.execute("select count(*) from analytics.fct_tickets").fetchone()[0] == live
        mart = dict(
            conn.execute(
                "select template_id, sent from analytics.template_delivery_7d"
                " where tenant_id = 'demo'"
            ).fetchall()
        )
        pipeline = dict(
            conn.execute(
                """
                with today as (select (now() at time zone 'UTC')::date as d)
                select template_id, sum(n)::bigint from (
                    select template_id, notification_count as n
                    from analytics.template_stats_daily, today
                    where tenant_id = 'demo' and day between today.d - 7 and today.d - 1
                    union all
                    select template_id, 1 from (
                        select template_id, tenant_id, sent_at from raw.notifications
                        union all
                        select template_id, tenant_id, sent_at from raw.notification_history
                    ) n, today
                    where tenant_id = 'demo' and (sent_at at time zone 'UTC')::date = today.d
                ) both_parts
                group by template_id
                """
            ).fetchall()
        )
    assert mart and mart == pipeline


@pytest.mark.slow
@pytest.mark.timeout(560)
def test_demo_conversations_go_through_every_step(two_runs, demo_home):
    """Messages became tickets, agents' actions and the closure schedule moved them, the work
    queues' counters equal a recount, and the conversations feed the feedback workspace."""
    url = _supportflow(demo_home, "db", "url", timeout=60).stdout.strip()
    with psycopg.connect(url) as conn:
        states = dict(
            conn.execute(
                "select state, count(*) from raw.conversation_tickets where tenant_id = 'demo'"
                " group by 1"
            ).fetchall()
        )
        causes = {
            row[0]
            for row in conn.execute(
                "select distinct cause from raw.ticket_state_changes where tenant_id = 'demo'"
            )
        }
        counters = dict(
            conn.execute(
                "select (queue_id, state)::text, ticket_count from analytics.queue_counters"
                " where tenant_id = 'demo' and ticket_count > 0"
            ).fetchall()
        )
        recount = dict(
            conn.execute(
                "select (queue_id, state)::text, count(*) from raw.work_queue_members"
                " where tenant_id = 'demo' group by queue_id, state"
            ).fetchall()
        )
        from_conversations = conn.execute(
            "select count(*) from raw.feedback_items i join control.workspaces w"
            " using (workspace_id) where w.name = 'demo' and i.source = 'conversations'"
        ).fetchone()[0]
        daily = conn.execute(
            "select count(*), sum(new_tickets) from analytics.conversation_daily"
            " where tenant_id = 'demo'"
        ).fetchone()
    assert states.get("closed", 0) > 0 and sum(states.values()) > states["closed"], states
    assert {"message", "agent", "schedule"} <= causes
    assert counters and counters == recount
    assert from_conversations > 100
    assert daily[0] > 0 and daily[1] > 0

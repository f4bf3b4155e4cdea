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


def _supportflow(
    home: Path, *args: str, timeout: float = 240, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTFLOW_", "DAGSTER_"))}
    env["SUPPORTFLOW_HOME"] = str(home)
    env.update(extra_env or {})
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
        "__ASSET_JOB",  # the runs of the asset backfills (daily partitions)
        "feedback_ingest_job",
        "conversation_messages_drain",
        "conversation_events_drain",
        "conversation_closure",
        "analytics_dbt_build",
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


# --- the first hour in the Dagster UI, through the webserver's GraphQL API ----------------------

RUNS_QUERY = """
{
  runsOrError(limit: 1000) {
    __typename
    ... on Runs {
      results {
        runId jobName status creationTime
        tags { key value }
        repositoryOrigin { repositoryLocationName repositoryName }
      }
    }
  }
}
"""
BACKFILLS_QUERY = """
{
  partitionBackfillsOrError(limit: 100) {
    __typename
    ... on PartitionBackfills {
      results { id status isAssetBackfill partitionNames assetSelection { path } }
    }
  }
}
"""
ASSETS_QUERY = """
{
  assetNodes {
    assetKey { path }
    staleStatus
    isPartitioned
    assetPartitionStatuses {
      __typename
      ... on TimePartitionStatuses { ranges { status startKey endKey } }
      ... on DefaultPartitionStatuses { materializedPartitions }
    }
  }
}
"""
LAUNCHER_TAGS = ("dagster/sensor_name", "dagster/schedule_name", "dagster/backfill")
NOISE = ("Warning", "WARNING", "warnings.warn", "superseded")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(base: str, query: str) -> dict:
    import httpx

    response = httpx.post(f"{base}/graphql", json={"query": query}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _runs(base: str) -> list[dict]:
    runs = _graphql(base, RUNS_QUERY)["runsOrError"]
    assert runs["__typename"] == "Runs", runs
    for run in runs["results"]:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return runs["results"]


def _materialized_days(ranges: list[dict]) -> set[str]:
    from datetime import date, timedelta

    days: set[str] = set()
    for r in ranges:
        if r["status"] != "MATERIALIZED":
            continue
        day, end = date.fromisoformat(r["startKey"]), date.fromisoformat(r["endKey"])
        while day <= end:
            days.add(day.isoformat())
            day += timedelta(days=1)
    return days


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_first_hour_in_the_ui(two_runs, demo_home, tmp_path):
    """After two demos the UI (GraphQL) shows every demo run attached to the code location and
    to its launcher, the demo's backfills with their days materialized and nothing unsynced;
    then `supportflow dev` keeps the demo alive: new runs appear, and none fails. Neither demo
    wrote a warning on stderr."""
    import signal
    import time

    first, second = two_runs
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    for demo in (first, second):
        noisy = [line for line in demo.stderr.splitlines() if any(n in line for n in NOISE)]
        assert not noisy, noisy[:5]

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPPORTFLOW_", "DAGSTER_"))}
    env["SUPPORTFLOW_HOME"] = str(demo_home)
    log = (tmp_path / "dev.log").open("w+")
    dev = subprocess.Popen(
        [sys.executable, "-m", "orchestration.cli", "dev", "--port", str(port)]
        + ["--demo-interval", "10"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    dev_started = time.time()
    try:
        deadline = time.monotonic() + 180
        while True:
            assert dev.poll() is None, _tail(log)
            try:
                demo_runs = _runs(base)
                break
            except Exception:  # noqa: BLE001 - not serving yet
                assert time.monotonic() < deadline, f"the UI never answered: {_tail(log)}"
                time.sleep(2)
        demo_runs = [r for r in demo_runs if r["creationTime"] < dev_started]
        assert len(demo_runs) >= 30, len(demo_runs)
        for run in demo_runs:
            assert run["status"] == "SUCCESS", run
            origin = run["repositoryOrigin"]
            assert origin and origin["repositoryLocationName"] == "orchestration.definitions", run
            assert any(tag in run["tags"] for tag in LAUNCHER_TAGS), run
        launched_by = {tag for run in demo_runs for tag in LAUNCHER_TAGS if tag in run["tags"]}
        assert launched_by == set(LAUNCHER_TAGS)

        backfills = _graphql(base, BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]
        assert len(backfills) >= 4, backfills
        assert {b["status"] for b in backfills} == {"COMPLETED_SUCCESS"}, backfills
        nodes = {
            "/".join(n["assetKey"]["path"]): n for n in _graphql(base, ASSETS_QUERY)["assetNodes"]
        }
        for backfill in backfills:
            assert backfill["isAssetBackfill"] and len(backfill["partitionNames"]) == 7
            for key in backfill["assetSelection"]:
                statuses = nodes["/".join(key["path"])]["assetPartitionStatuses"]
                assert set(backfill["partitionNames"]) <= _materialized_days(statuses["ranges"])
        # asserted at the end, so that a failure here does not hide the living demo's
        unsynced = sorted(name for name, n in nodes.items() if n["staleStatus"] == "STALE")

        # the living demo: the generator publishes, sensors fire, the daemon launches runs
        deadline = time.monotonic() + 300
        while True:
            new = [r for r in _runs(base) if r["creationTime"] >= dev_started]
            failed = [r for r in new if r["status"] in ("FAILURE", "CANCELED")]
            assert not failed, (failed, _tail(log))
            succeeded = [r for r in new if r["status"] == "SUCCESS"]
            if len(succeeded) >= 3:
                break
            assert time.monotonic() < deadline, (new, _tail(log))
            time.sleep(5)
        assert all(any(tag in r["tags"] for tag in LAUNCHER_TAGS) for r in succeeded)
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(timeout=60) == 0
        log.seek(0)
        output = log.read()
        assert "living demo: sandbox" in output
        for noise in ("BetaWarning", "PreviewWarning", "DeprecationWarning", "superseded"):
            assert noise not in output, output
        assert not unsynced, f"unsynced after the second demo: {unsynced}"
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
        log.close()


def _tail(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()[-4000:]

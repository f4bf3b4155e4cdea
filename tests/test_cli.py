"""The CLI as a user runs it: a separate process, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestration.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_db_up_prints_a_url_psql_can_use_and_is_idempotent(db_url, sf_home):
    first = run_cli("db", "up")
    assert first.returncode == 0, first.stderr
    url = first.stdout.strip()
    assert url == db_url
    psql = subprocess.run(
        ["psql", url, "-Atc", "select count(*) from control.schema_migrations"],
        capture_output=True,
        text=True,
        check=True,
    )
    migrations = psql.stdout.strip()
    second = run_cli("db", "up")
    assert second.returncode == 0 and second.stdout.strip() == url
    again = subprocess.run(
        ["psql", url, "-Atc", "select count(*) from control.schema_migrations"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert again.stdout.strip() == migrations
    assert (sf_home / "dagster" / "dagster.yaml").exists()


def test_queue_send_and_stats(tmp_path, pg_queues):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps({"activity_id": f"q{i}"}) for i in range(3)) + "\n")
    sent = run_cli("queue", "send", "activities", str(path))
    assert sent.returncode == 0, sent.stderr
    assert "sent 3" in sent.stdout
    stats = run_cli("queue", "stats")
    line = next(x for x in stats.stdout.splitlines() if x.startswith("activities "))
    assert line.split()[1:] == ["3", "0", "0", "0"]


@pytest.mark.parametrize(
    ("args", "content", "expected"),
    [
        (("queue", "send", "activities"), '{"activity_id": 1}\n{not json\n', "events.jsonl:2"),
        (("queue", "send", "activities"), '{"activity_id": 1}\n[1, 2]\n', "expected a JSON object"),
        (("queue", "send", "nowhere"), '{"activity_id": 1}\n', "unknown queue 'nowhere'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2_and_sends_nothing(
    tmp_path, pg_queues, args, content, expected
):
    path = tmp_path / "events.jsonl"
    path.write_text(content)
    result = run_cli(*args, str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr
    assert all(s.visible == 0 for s in pg_queues.stats())


def test_unknown_command_and_bad_backend_are_one_line_errors():
    result = run_cli("frobnicate")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    bad = run_cli("queue", "stats", env={"SUPPORTFLOW_QUEUE_BACKEND": "kafka"})
    assert bad.returncode == 2
    assert "SUPPORTFLOW_QUEUE_BACKEND" in bad.stderr


def test_queue_stats_lists_pod_queues_before_their_first_message(pg_queues, db):
    tenant = "pod-stats-tenant"
    db.execute(
        "insert into control.email_tenant_pods (tenant_id, pod) values (%s, 'eu-2')"
        " on conflict (tenant_id) do update set pod = excluded.pod",
        (tenant,),
    )
    try:
        stats = run_cli("queue", "stats", env={"SUPPORTFLOW_POD": "us-1"})
    finally:
        db.execute("delete from control.email_tenant_pods where tenant_id = %s", (tenant,))
    assert stats.returncode == 0 and stats.stderr == "", stats.stderr  # no warnings either
    rows = {line.split()[0]: line.split()[1:] for line in stats.stdout.splitlines()[1:]}
    # the default pod's, this deployment's and a routed tenant's, all empty
    for queue in ("email_events.default", "email_events.us-1", "email_events.eu-2"):
        assert rows[queue] == ["0", "0", "0", "0"]
    assert list(rows) == sorted(rows) and "messages" in rows


@pytest.mark.parametrize(
    "args",
    [
        ("stats", "templates", "nosuchtenant"),
        ("activities", "nosuchtenant", "42"),
        ("conversations", "show", "nosuchtenant", "1"),
        ("conversations", "counters", "nosuchtenant"),
        ("conversations", "search", "nosuchtenant", "refund"),
    ],
)
def test_an_unknown_tenant_is_one_line_and_exit_2(db_url, args):
    result = run_cli(*args)
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip().splitlines() == [
        "supportflow: error: TENANT: unknown tenant 'nosuchtenant' (no desk, workspace, origin,"
        " email setting or data of it here)"
    ]
    assert result.stdout == ""


def test_a_tenant_known_only_by_its_data_is_answered(db):
    """A tenant with notifications but no configuration is known: its (empty) window prints."""
    tenant = "known-by-data"
    db.execute(
        "insert into raw.notifications (notification_id, tenant_id, ticket_id, template_id,"
        " recipient, provider, provider_reference, status, created_at, sent_at,"
        " status_updated_at) values (%s, %s, '1', 'welcome', 'r@example.com', 'mailgun', %s,"
        " 'delivered', '2020-01-01', '2020-01-01', '2020-01-01') on conflict do nothing",
        (f"{tenant}-n1", tenant, f"{tenant}-ref"),
    )
    try:
        result = run_cli("stats", "templates", tenant)
    finally:
        db.execute("delete from raw.notifications where tenant_id = %s", (tenant,))
    assert result.returncode == 0 and result.stderr == "", result.stderr  # no warnings either
    assert result.stdout.startswith(f"tenant {tenant}: last 7 day(s) plus today")


@pytest.mark.parametrize("args", [("insights", "nosuchws"), ("sources", "list", "nosuchws")])
def test_an_unknown_workspace_is_one_line_and_exit_2(db_url, args):
    result = run_cli(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "supportflow: error: no workspace named 'nosuchws' (see `supportflow workspaces list`)"
    ]

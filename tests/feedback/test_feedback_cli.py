"""`supportflow workspaces`, `sources` and `insights`: what they print and store, and bad input
(one stderr line, exit 2)."""

from __future__ import annotations

import uuid
from datetime import date

from psycopg.types.json import Jsonb

from orchestration.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_workspaces_sources_and_insights(capsys, db):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    assert run(capsys, "workspaces", "add", name, "--tenant", "acme")[0] == 0
    code, _, err = run(capsys, "workspaces", "add", name)
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    code, _, err = run(capsys, "workspaces", "add", "Bad Name")
    assert code == 2 and "lowercase" in err

    code, out, _ = run(capsys, "sources", "add", name, "--kind", "webhook")
    assert code == 0
    token = out.split("bearer token (shown once, store it now): ")[1].strip()
    assert token.startswith("sfw_")
    code, _, err = run(capsys, "sources", "add", name, "--kind", "webhook", "--name", "second")
    assert code == 2 and "already has a webhook source" in err
    code, out, _ = run(capsys, "sources", "list", name)
    assert token not in out  # shown once: never again
    stored = db.execute(
        "select w.webhook_token_hash, s.config::text from control.workspaces w "
        "join control.feedback_sources s using (workspace_id) where w.name = %s",
        (name,),
    ).fetchall()
    assert all(token not in (h or "") + c for h, c in stored)

    argv = ("sources", "add", name, "--kind", "discourse", "--base-url", "https://f.example")
    assert run(capsys, *argv)[0] == 0
    code, _, err = run(capsys, *argv)
    assert code == 2 and "already has a source named 'discourse'" in err
    code, _, err = run(capsys, "sources", "add", name, "--kind", "discourse", "--name", "x")
    assert code == 2 and "--base-url is required" in err
    code, _, err = run(
        capsys, "sources", "add", name, "--kind", "webhook", "--name", "y", "--desk", "a"
    )
    assert code == 2 and "does not take --desk" in err
    code, _, err = run(capsys, "sources", "add", name, "--kind", "zendesk", "--desk", "nope")
    assert code == 2 and "unknown desk" in err
    code, _, err = run(capsys, "sources", "add", "missing-ws", "--kind", "webhook")
    assert code == 2 and "no workspace named" in err

    code, out, _ = run(capsys, "insights", name)
    assert code == 0 and "no insight reports" in out
    workspace_id = db.execute(
        "select workspace_id from control.workspaces where name = %s", (name,)
    ).fetchone()[0]
    anomaly = {"kind": "negative_spike", "detail": "negative share 60% vs trailing mean 20%"}
    for day in (date(2026, 3, 1), date(2026, 3, 2)):
        db.execute(
            """
            insert into analytics.insight_reports (workspace_id, day, source, tenant_id, items,
                positive, neutral, negative, avg_sentiment, top_topics, anomalies)
            values (%s, %s, 'all', 'acme', 10, 2, 2, 6, -0.3, %s, %s)
            """,
            (workspace_id, day, Jsonb([{"topic": "refund / invoice", "items": 4}]),
             Jsonb([anomaly] if day.day == 2 else [])),
        )  # fmt: skip
    code, out, _ = run(capsys, "insights", name, "--days", "1")
    assert code == 0 and "2026-03-02" in out and "2026-03-01" not in out
    assert "ANOMALY negative_spike" in out and "refund / invoice" in out
    code, out, _ = run(capsys, "insights", name, "--days", "7")
    assert "2026-03-01" in out
    code, _, err = run(capsys, "insights", name, "--days", "0")
    assert code == 2


def test_discourse_api_key_from_the_environment(capsys, db, monkeypatch):
    name = f"cli-{uuid.uuid4().hex[:8]}"
    assert run(capsys, "workspaces", "add", name)[0] == 0
    argv = ("sources", "add", name, "--kind", "discourse", "--base-url", "https://f.example",
            "--api-key-env", "FB_TEST_FORUM_KEY")  # fmt: skip
    monkeypatch.delenv("FB_TEST_FORUM_KEY", raising=False)
    code, _, err = run(capsys, *argv)
    assert code == 2 and "FB_TEST_FORUM_KEY is not set" in err
    monkeypatch.setenv("FB_TEST_FORUM_KEY", "very-secret-forum-key")
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "very-secret-forum-key" not in out
    config = db.execute(
        "select s.config from control.feedback_sources s join control.workspaces w "
        "using (workspace_id) where w.name = %s",
        (name,),
    ).fetchone()[0]
    assert config["api_key_encrypted"] and "very-secret-forum-key" not in str(config)
    code, out, _ = run(capsys, "sources", "list", name)
    assert "very-secret-forum-key" not in out

"""Workspaces and sources without SQL, through the real CLI: pause, resume, rotate, rename,
remove, and remove --purge counting what went."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from assets.feedback.rules import FeedbackItem
from assets.feedback.store import get_workspace, list_sources, upsert_items
from orchestration.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def count(db, sql_text: str, *params) -> int:
    return db.execute(sql_text, params).fetchone()[0]


def test_source_and_workspace_lifecycle(capsys, db, monkeypatch):
    name = f"life-{uuid.uuid4().hex[:8]}"
    assert run(capsys, "workspaces", "add", name, "--tenant", "acme")[0] == 0
    forum = ("sources", "add", name, "--kind", "discourse", "--base-url", "https://f.example")
    assert run(capsys, *forum, "--api-key-env", "NOPE_UNSET")[0] == 2
    monkeypatch.setenv("FORUM_KEY_1", "first-key-123")
    assert run(capsys, *forum, "--api-key-env", "FORUM_KEY_1", "--api-username", "bot")[0] == 0
    assert run(capsys, "sources", "add", name, "--kind", "webhook")[0] == 0
    (source,) = [s for s in list_sources(db, name) if s.name == "discourse"]
    workspace = get_workspace(db, name)
    upsert_items(
        db,
        [
            FeedbackItem(
                workspace.workspace_id, "acme", "discourse", source.source_id, f"post-{n}",
                "someone", f"the export is slow, take {n}", datetime.now(UTC),
            )
            for n in range(5)
        ],
    )  # fmt: skip

    code, out, _ = run(capsys, "sources", "disable", name, "discourse")
    assert code == 0 and out.strip() == f"disabled source {name}/discourse"
    assert [s.name for s in list_sources(db, name)] == ["webhook"]  # active only
    assert run(capsys, "sources", "enable", name, "discourse")[0] == 0
    assert {s.name for s in list_sources(db, name)} == {"discourse", "webhook"}
    code, _, err = run(capsys, "sources", "disable", name, "nope")
    assert code == 2 and "no source named 'nope'" in err

    before = list_sources(db, name)[0].config["api_key_encrypted"]
    monkeypatch.setenv("FORUM_KEY_2", "second-key-456")
    code, out, err = run(
        capsys, "sources", "update", name, "discourse", "--api-key-env", "FORUM_KEY_2",
        "--rename", "forum",
    )  # fmt: skip
    assert code == 0, err
    assert "second-key-456" not in out + err and "renamed to forum" in out
    (renamed,) = [s for s in list_sources(db, name) if s.name == "forum"]
    assert renamed.config["api_key_encrypted"] != before
    assert run(capsys, "sources", "update", name, "forum")[0] == 2

    code, _, err = run(capsys, "sources", "remove", name, "forum")
    assert code == 2 and "holds 5 items" in err
    assert count(db, "select count(*) from raw.feedback_items where source_id = %s",
                 source.source_id) == 5  # fmt: skip
    code, _, err = run(capsys, "workspaces", "remove", name)
    assert code == 2 and "--purge" in err

    code, out, _ = run(capsys, "sources", "remove", name, "forum", "--purge")
    assert code == 0 and "raw.feedback_items 5" in out and "control.feedback_sources 1" in out
    assert count(db, "select count(*) from raw.feedback_items where source_id = %s",
                 source.source_id) == 0  # fmt: skip
    code, out, _ = run(capsys, "workspaces", "remove", name, "--purge")
    assert code == 0 and out.startswith(f"removed workspace {name}; deleted ")
    assert "control.workspaces 1" in out and "control.feedback_sources 1" in out
    assert count(db, "select count(*) from control.workspaces where name = %s", name) == 0
    code, _, err = run(capsys, "workspaces", "remove", name)
    assert code == 2 and "no workspace named" in err

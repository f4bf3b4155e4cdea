"""Rotating a workspace's webhook bearer token (`supportflow sources token WORKSPACE`): the new
token works at once, the old one stops at once, over HTTP against the real service."""

from __future__ import annotations

import httpx

from orchestration.cli import main

ITEM = {"external_id": "r-1", "text": "The export is slow", "author": None,
        "created_at": "2026-03-01T10:00:00Z"}  # fmt: skip


def push(url: str, workspace: str, token: str) -> int:
    response = httpx.post(
        f"{url}/webhooks/feedback/{workspace}",
        json=ITEM,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return response.status_code


def test_rotated_token_replaces_the_old_one(
    webhook_url, make_workspace, add_source, feedback_queue, capsys
):
    workspace = make_workspace()
    _, shown = add_source(workspace, "webhook")
    old = shown["bearer token (shown once, store it now)"]
    assert push(webhook_url, workspace.name, old) == 202
    assert main(["sources", "token", workspace.name]) == 0
    new = capsys.readouterr().out.split("store it now): ")[1].strip()
    assert new.startswith("sfw_") and new != old
    assert push(webhook_url, workspace.name, old) == 401
    assert push(webhook_url, workspace.name, new) == 202
    assert main(["sources", "token", "no-such-workspace"]) == 2
    assert "no webhook source" in capsys.readouterr().err


def test_replace_a_private_forum_api_key(make_workspace, settings, db, monkeypatch, capsys):
    from assets.feedback.sources import source_kind
    from assets.feedback.sources.base import ConfigContext
    from assets.feedback.store import add_source
    from resources.secrets import SecretBox

    box = SecretBox.from_settings(settings.secret_key, settings.home)
    config = source_kind("discourse").build_config(
        {"base-url": "https://forum.example", "api-key-env": "K"},
        ConfigContext(box, {"K": "old-forum-key"}),
    )
    workspace = make_workspace()
    source_id = add_source(db, workspace, "private", "discourse", config)
    monkeypatch.setenv("NEW_FORUM_KEY", "new-forum-key")
    assert (
        main(["sources", "key", workspace.name, "private", "--api-key-env", "NEW_FORUM_KEY"]) == 0
    )
    captured = capsys.readouterr()
    assert "new-forum-key" not in captured.out + captured.err
    stored = db.execute(
        "select config from control.feedback_sources where source_id = %s", (source_id,)
    ).fetchone()[0]
    assert box.decrypt(stored["api_key_encrypted"].encode()) == "new-forum-key"
    assert stored["base_url"] == "https://forum.example"
    assert main(["sources", "key", workspace.name, "nope", "--api-key-env", "NEW_FORUM_KEY"]) == 2

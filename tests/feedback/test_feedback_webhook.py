"""`POST /webhooks/feedback/{workspace}` over real HTTP: auth, validation, limits, enqueueing;
and the drain's handling of messages it cannot apply."""

from __future__ import annotations

import httpx
import pytest

from resources.queues import drain

ITEM = {"external_id": "r-1", "text": "The export is slow", "author": "ana",
        "created_at": "2026-03-01T10:00:00Z"}  # fmt: skip


@pytest.fixture
def hooked(make_workspace, add_source):
    workspace = make_workspace()
    source, shown = add_source(workspace, "webhook")
    return workspace, source, shown["bearer token (shown once, store it now)"]


def _post(url, workspace, token=None, **kwargs):
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{url}/webhooks/feedback/{workspace}", headers=headers, timeout=30, **kwargs)


def test_auth_validation_and_limits(webhook_url, hooked, make_workspace, feedback_queue, db):
    workspace, _, token = hooked
    other = make_workspace()
    assert _post(webhook_url, workspace.name, json=ITEM).status_code == 401
    assert _post(webhook_url, workspace.name, "sfw_wrong", json=ITEM).status_code == 401
    assert _post(webhook_url, "no-such-workspace", token, json=ITEM).status_code == 401
    assert _post(webhook_url, other.name, token, json=ITEM).status_code == 401  # no webhook there
    basic = _post(
        webhook_url, workspace.name, json=ITEM, headers={"Authorization": f"Basic {token}"}
    )
    assert basic.status_code == 401

    response = _post(
        webhook_url, workspace.name, token, content=b"a,b", headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 415
    big = b'{"text": "' + b"x" * (1024 * 1024) + b'"}'
    response = _post(
        webhook_url,
        workspace.name,
        token,
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    response = _post(
        webhook_url,
        workspace.name,
        token,
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    response = _post(webhook_url, workspace.name, token, json=[ITEM, {**ITEM, "text": ""}])
    assert response.status_code == 400 and "item[1].text" in response.json()["error"]
    assert feedback_queue.depth("feedback") == 0  # nothing of a rejected request is enqueued

    response = _post(webhook_url, workspace.name, token, json=ITEM)
    assert response.status_code == 202 and response.json()["accepted"] == 1
    assert feedback_queue.depth("feedback") == 1
    message = feedback_queue.receive("feedback")[0]
    assert message.body["workspace_id"] == workspace.workspace_id
    assert message.body["tenant_id"] == workspace.tenant_id
    assert message.body["item_id"] == response.json()["item_ids"][0]
    assert token not in str(message.body)
    stored = db.execute(
        "select webhook_token_hash from control.workspaces where workspace_id = %s",
        (workspace.workspace_id,),
    ).fetchone()[0]
    assert stored != token and token not in stored and len(stored) == 64


def test_drain_rejects_what_it_cannot_apply(
    hooked, make_workspace, add_source, warehouse, feedback_queue, db
):
    from assets.feedback.defs import apply_feedback_messages
    from assets.feedback.sources.webhook import to_message, validate_item

    workspace, source, _ = hooked
    good = to_message(source, validate_item(ITEM))
    edited = to_message(source, validate_item({**ITEM, "text": "The export is fast now"}))
    other_ws = make_workspace()
    other_source, _ = add_source(other_ws, "webhook")
    spoofed = {**to_message(other_source, validate_item(ITEM)), "tenant_id": workspace.tenant_id}
    malformed = {**good, "event_id": "x1", "created_at": "not a time"}
    feedback_queue.send("feedback", [good, good, malformed, spoofed])
    alerts = []
    report = drain(
        feedback_queue,
        "feedback",
        lambda batch: apply_feedback_messages(warehouse.connection, batch),
        raise_alert=lambda *args: alerts.append(args),
    )
    assert report.rejected == 2 and report.applied == 2
    reasons = sorted(d.error for d in feedback_queue.dead_letters("feedback"))
    assert "created_at" in reasons[0] and "not an active webhook source" in reasons[1]
    assert alerts and alerts[0][0] == "queue:feedback"
    feedback_queue.send("feedback", [good, edited])  # a re-push and an edit
    drain(feedback_queue, "feedback", lambda b: apply_feedback_messages(warehouse.connection, b))
    rows = db.execute(
        "select workspace_id, text from raw.feedback_items where source_id in (%s, %s)",
        (source.source_id, other_source.source_id),
    ).fetchall()
    assert rows == [(workspace.workspace_id, "The export is fast now")]

"""Pushed feedback with a valid token but content that can never be stored, over HTTP against
the real webhook service (issue 14): 400 at once, kept with its reason in
`control.rejected_input`, nothing queued, and neither the text nor the author in the log."""

from __future__ import annotations

import logging

import httpx
import pytest

AUTHOR = "hostile-author@example.org"


@pytest.fixture
def hooked(make_workspace, add_source, db):
    db.execute("truncate control.rejected_input")
    workspace = make_workspace()
    _, shown = add_source(workspace, "webhook")
    return workspace, shown["bearer token (shown once, store it now)"]


def push(url: str, workspace: str, token: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/webhooks/feedback/{workspace}",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )


def kept(db) -> list[tuple[str, str, bytes]]:
    rows = db.execute(
        "select source, reason, body from control.rejected_input order by rejected_id"
    ).fetchall()
    return [(source, reason, bytes(body)) for source, reason, body in rows]


HOSTILE = {
    "NUL in the text": (b'"text": "The export\\u0000 is slow"', "text: holds a NUL character"),
    "lone surrogate in the text": (
        b'"text": "slow \\udc00 export"',
        "text: holds a lone surrogate",
    ),
    "NaN in metadata": (b'"metadata": {"stars": NaN}', "metadata.stars: NaN or Infinity"),
    "Infinity in metadata": (b'"metadata": {"stars": -Infinity}', "metadata.stars: NaN or Inf"),
    "1e400 in metadata": (b'"metadata": {"stars": 1e400}', "metadata.stars: NaN or Infinity"),
}


def _item_with(fragment: bytes) -> bytes:
    base = (
        b'{"external_id": "h-1", "author": "' + AUTHOR.encode() + b'", '
        b'"created_at": "2026-03-01T10:00:00Z", '
    )
    if not fragment.startswith(b'"text"'):
        base += b'"text": "The export is slow", '
    return base + fragment + b"}"


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_unstorable_feedback_is_400_kept_and_not_logged(
    webhook_url, hooked, feedback_queue, db, caplog, case
):
    workspace, token = hooked
    fragment, reason = HOSTILE[case]
    body = _item_with(fragment)
    with caplog.at_level(logging.INFO):
        response = push(webhook_url, workspace.name, token, body)
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    assert feedback_queue.depth("feedback") == 0
    [(source, kept_reason, kept_body)] = kept(db)
    assert source == f"/webhooks/feedback/{workspace.name}" and reason in kept_reason
    assert kept_body == body
    assert AUTHOR not in caplog.text and token not in caplog.text
    assert "Traceback" not in caplog.text


def test_deep_json_is_400_one_log_line_and_kept(webhook_url, hooked, feedback_queue, db, caplog):
    workspace, token = hooked
    deep = b"[" * 100_000 + b"]" * 100_000
    with caplog.at_level(logging.INFO):
        response = push(webhook_url, workspace.name, token, deep)
    assert response.status_code == 400
    assert "nested deeper than 64 levels" in response.json()["error"]
    lines = [r for r in caplog.records if r.name.startswith(("supportflow", "uvicorn"))]
    assert len(lines) == 1 and "Traceback" not in caplog.text
    assert feedback_queue.depth("feedback") == 0
    assert len(kept(db)) == 1


@pytest.mark.parametrize(
    ("created_at", "field"),
    [(b"1e300", "item.created_at"), (b"NaN", "item.created_at"),
     (b'"+275760-09-13T00:00:00Z"', "item.created_at"), (b"{}", "item.created_at")],
)  # fmt: skip
def test_wrong_types_and_timestamps_are_400_naming_the_field(
    webhook_url, hooked, feedback_queue, db, created_at, field
):
    workspace, token = hooked
    body = (
        b'{"external_id": "h-2", "text": "slow", "author": null, "created_at": ' + created_at + b"}"
    )
    response = push(webhook_url, workspace.name, token, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(field)
    assert feedback_queue.depth("feedback") == 0
    assert len(kept(db)) == 1

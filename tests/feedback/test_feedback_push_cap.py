"""The README's cap on a feedback push, over real HTTP: 1,000 items in one request are taken,
1,001 are refused whole (nothing of the request is enqueued)."""

from __future__ import annotations

import httpx


def items(count: int) -> list[dict]:
    return [
        {
            "external_id": f"cap-{n}",
            "text": f"Feedback number {n}: the export is slow",
            "author": "ana",
            "created_at": "2026-03-01T10:00:00Z",
        }
        for n in range(count)
    ]


def test_a_push_takes_at_most_1000_items(webhook_url, make_workspace, add_source, feedback_queue):
    workspace = make_workspace()
    _, shown = add_source(workspace, "webhook")
    token = shown["bearer token (shown once, store it now)"]
    url = f"{webhook_url}/webhooks/feedback/{workspace.name}"
    headers = {"Authorization": f"Bearer {token}"}

    refused = httpx.post(url, headers=headers, json=items(1001), timeout=60)
    assert refused.status_code == 400
    assert "at most 1000 items" in refused.json()["error"]
    assert feedback_queue.depth("feedback") == 0

    taken = httpx.post(url, headers=headers, json=items(1000), timeout=60)
    assert taken.status_code == 202 and taken.json()["accepted"] == 1000
    assert len(set(taken.json()["item_ids"])) == 1000
    assert feedback_queue.depth("feedback") == 1000

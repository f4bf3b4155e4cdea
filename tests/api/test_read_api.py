"""The helpdesk read API over HTTP against the real webhook service: tokens from the real CLI,
the same numbers as the CLI, pagination without gaps or repeats, tenants kept apart."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from assets.activities.rules import parse_activity
from assets.activities.store import insert_activities
from assets.feedback.store import create_workspace
from orchestration.cli import main
from webhooks.app import create_app, serve_in_thread
from webhooks.service import WebhookService


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def api_url(settings, embedded_resources):
    resources = embedded_resources
    service = WebhookService(settings, resources["queues"], resources["warehouse"])
    with serve_in_thread(create_app(service)) as url:
        yield url


def issue_token(capsys, tenant: str, name: str = "helpdesk") -> str:
    assert main(["api-tokens", "add", tenant, "--name", name]) == 0
    out, err = capsys.readouterr()
    token = out.strip()
    assert token.startswith("sfapi_") and "shown once" in err
    return token


def get(url: str, token: str | None, **params) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, params=params, timeout=30)


def test_tokens_are_stored_as_hashes_listed_and_revoked(db, api_url, capsys):
    tenant = unique("api")
    token = issue_token(capsys, tenant)
    stored = db.execute(
        "select token_hash from control.api_tokens where tenant_id = %s", (tenant,)
    ).fetchone()[0]
    assert token not in stored and len(stored) == 64
    assert main(["api-tokens", "add", tenant, "--name", "helpdesk"]) == 2
    assert "already has a token" in capsys.readouterr().err

    url = f"{api_url}/api/v1/templates/stats"
    assert get(url, token).status_code == 200
    assert main(["api-tokens", "list", "--tenant", tenant]) == 0
    listing = capsys.readouterr().out
    assert tenant in listing and "active" in listing and token not in listing

    assert main(["api-tokens", "revoke", tenant, "helpdesk"]) == 0
    capsys.readouterr()
    revoked = get(url, token)
    assert revoked.status_code == 401
    assert revoked.json()["error"]["code"] == "unauthorized"
    assert revoked.headers["www-authenticate"] == "Bearer"
    for bad in (None, "sfapi_not-a-token", token + "x"):
        assert get(url, bad).status_code == 401
    assert main(["api-tokens", "revoke", tenant, "nope"]) == 2


def test_timeline_pages_to_the_end_without_gaps_or_repeats(db, api_url, capsys):
    tenant, other = unique("api"), unique("api")
    start = datetime.now(UTC) - timedelta(hours=5)
    events = [
        {
            "activity_id": f"{tenant}-{n}",
            "tenant_id": tenant,
            "ticket_id": 42,
            "actor_type": "user" if n % 3 else "system",
            "actor_id": f"agent-{n % 4}",
            "action": "status_changed",
            "rule": None if n % 3 else {"id": 7, "name": "auto-close"},
            # several activities share a second: the cursor must break ties by id
            "occurred_at": (start + timedelta(seconds=n // 4)).isoformat(),
        }
        for n in range(57)
    ]
    events.append({**events[0], "activity_id": f"{other}-x", "tenant_id": other})
    insert_activities(
        db, [parse_activity({k: v for k, v in e.items() if v is not None}) for e in events]
    )
    token = issue_token(capsys, tenant)
    other_token = issue_token(capsys, other)

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
        response = get(f"{api_url}/api/v1/tickets/42/activities", token, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [a["activity_id"] for a in body["activities"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 6
    expected = sorted(
        (e for e in events if e["tenant_id"] == tenant),
        key=lambda e: (datetime.fromisoformat(e["occurred_at"]), e["activity_id"]),
    )
    assert seen == [e["activity_id"] for e in expected]  # every one once, oldest first

    # the CLI shows the same timeline
    assert main(["activities", tenant, "42", "--json"]) == 0
    cli_ids = [json.loads(line)["activity_id"] for line in capsys.readouterr().out.splitlines()]
    assert cli_ids == seen

    # the other tenant sees only its own activity of "ticket 42"; an unknown ticket is 404
    theirs = get(f"{api_url}/api/v1/tickets/42/activities", other_token).json()
    assert [a["activity_id"] for a in theirs["activities"]] == [f"{other}-x"]
    missing = get(f"{api_url}/api/v1/tickets/43/activities", token)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert get(f"{api_url}/api/v1/tickets/abc/activities", token).status_code == 404
    for bad in ({"limit": 0}, {"limit": "x"}, {"cursor": "!!"}):
        assert get(f"{api_url}/api/v1/tickets/42/activities", token, **bad).status_code == 400


def test_template_stats_are_the_cli_numbers(db, api_url, capsys):
    tenant = unique("api")
    now = datetime.now(UTC)
    today = now.date()
    db.execute(
        "insert into analytics.template_stats_daily (day, tenant_id, template_id, status, "
        "notification_count) values (%s, %s, 'welcome', 'delivered', 5), "
        "(%s, %s, 'welcome', 'permanent-failure', 2), (%s, %s, 'reset', 'delivered', 9)",
        (today - timedelta(days=1), tenant, today - timedelta(days=3), tenant,
         today - timedelta(days=20), tenant),
    )  # fmt: skip
    for n in range(3):
        db.execute(
            "insert into raw.notifications (notification_id, tenant_id, template_id, recipient, "
            "provider, provider_reference, status, created_at, sent_at) "
            "values (%s, %s, 'welcome', 'a@example.org', 'mailgun', %s, 'delivered', %s, %s)",
            (f"{tenant}-n{n}", tenant, f"{tenant}-ref{n}", now, now),
        )
    token = issue_token(capsys, tenant)
    for days in (0, 2, 7):
        body = get(f"{api_url}/api/v1/templates/stats", token, days=days).json()
        assert main(["stats", "templates", tenant, "--days", str(days), "--json"]) == 0
        cli = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert body["stats"] == cli and body["days"] == days
    assert sum(s["notification_count"] for s in body["stats"]) == 5 + 2 + 3
    assert get(f"{api_url}/api/v1/templates/stats", token, days=8).status_code == 400
    assert get(f"{api_url}/api/v1/templates/stats", token, days="x").status_code == 400


def test_insights_of_the_tenants_own_workspace_only(db, api_url, capsys):
    tenant, other = unique("api"), unique("api")
    workspace = create_workspace(db, unique("ws"), tenant)
    foreign = create_workspace(db, unique("ws"), other)
    today = datetime.now(UTC).date()
    for offset, items in ((0, 12), (1, 7)):
        db.execute(
            "insert into analytics.insight_reports (workspace_id, day, source, tenant_id, items, "
            "positive, neutral, negative, avg_sentiment) values (%s, %s, 'all', %s, %s, 1, 2, 3, "
            "0.25)",
            (workspace.workspace_id, today - timedelta(days=offset), tenant, items),
        )
    token = issue_token(capsys, tenant)
    body = get(f"{api_url}/api/v1/insights/{workspace.name}", token, days=7).json()
    assert [(r["day"], r["items"]) for r in body["reports"]] == [
        (today.isoformat(), 12),
        ((today - timedelta(days=1)).isoformat(), 7),
    ]
    assert main(["insights", workspace.name, "--days", "7"]) == 0
    cli = capsys.readouterr().out
    assert "items=12" in cli and "items=7" in cli
    for name in (foreign.name, "no-such-workspace"):
        response = get(f"{api_url}/api/v1/insights/{name}", token)
        assert response.status_code == 404, name
        assert response.json()["error"]["message"] == f"no workspace named {name!r}"


def test_openapi_describes_every_endpoint(api_url):
    spec = httpx.get(f"{api_url}/api/v1/openapi.json", timeout=30).json()
    assert spec["openapi"].startswith("3.")
    assert set(spec["paths"]) >= {
        "/api/v1/tickets/{ticket_id}/activities",
        "/api/v1/templates/stats",
        "/api/v1/insights/{workspace}",
        "/api/v1/conversations/{sequence}",
        "/api/v1/work-queues/counters",
    }
    operation = spec["paths"]["/api/v1/templates/stats"]["get"]
    assert operation["parameters"][0]["name"] == "days" and "404" not in operation["responses"]


def test_conversation_and_work_queue_counters_of_the_tenant_only(
    conv_tables, conv_defs, instance, resources, api_url, capsys, tmp_path
):
    from tests.conversations.helpers import run_drain

    tenant = unique("api")
    assert (
        main(["origins", "add", tenant, "Shop IG", "--channel", "instagram", "--ref", "ig-1"]) == 0
    )
    condition = tmp_path / "open.json"
    condition.write_text(
        json.dumps({"field": "state", "op": "in", "value": ["created", "working"]})
    )
    assert main(["work-queues", "add", tenant, "Open", "--condition", str(condition)]) == 0
    base = {"type": "message", "tenant_id": tenant, "origin": "ig-1"}
    resources["queues"].send(
        "messages",
        [
            {**base, "message_id": "m1", "kind": "customer", "author": {"external_id": "u1"},
             "text": "The zipper broke after a week", "sent_at": "2026-11-20T10:00:00Z"},
            {**base, "message_id": "m2", "kind": "agent_reply", "author": {"external_id": "ag"},
             "customer": "u1", "text": "Sorry! A replacement is on its way",
             "sent_at": "2026-11-20T10:05:00Z"},
            {**base, "message_id": "m3", "kind": "customer", "author": {"external_id": "u2"},
             "text": "Do you ship to Norway?", "sent_at": "2026-11-20T11:00:00Z"},
        ],
    )  # fmt: skip
    run_drain(conv_defs, instance, resources)
    capsys.readouterr()
    token = issue_token(capsys, tenant)
    other_token = issue_token(capsys, unique("api"))

    ticket = get(f"{api_url}/api/v1/conversations/1", token)
    assert ticket.status_code == 200, ticket.text
    body = ticket.json()
    assert body["ticket"]["sequence"] == 1 and body["ticket"]["state"] == "working"
    assert [m["message_id"] for m in body["messages"]] == ["m1", "m2"]
    assert [(c["from_state"], c["to_state"]) for c in body["state_changes"]] == [
        (None, "created"),
        ("created", "working"),
    ]
    assert body["queues"] == ["Open"]
    assert get(f"{api_url}/api/v1/conversations/1", other_token).status_code == 404
    assert get(f"{api_url}/api/v1/conversations/99", token).status_code == 404

    counters = get(f"{api_url}/api/v1/work-queues/counters", token).json()
    assert counters == {
        "queues": [{"name": "Open", "priority": 0, "counts": {"created": 1, "working": 1}}]
    }
    assert main(["conversations", "counters", tenant]) == 0
    cli = capsys.readouterr().out.splitlines()
    assert cli[1] == "Open\t0\t1\t1\t0\t0\t0\t2"  # the same numbers
    assert get(f"{api_url}/api/v1/work-queues/counters", other_token).json() == {"queues": []}


def test_token_use_is_stamped_even_when_the_answer_is_an_error(db, api_url, capsys):
    """The token lookup and the endpoint share one transaction: an endpoint's 404 still
    commits the token's last_used_at, and a revoked token is refused in the same lookup."""
    tenant = unique("api")
    token = issue_token(capsys, tenant)
    assert get(f"{api_url}/api/v1/tickets/999/activities", token).status_code == 404
    (stamped,) = db.execute(
        "select last_used_at from control.api_tokens where tenant_id = %s", (tenant,)
    ).fetchone()
    assert stamped is not None
    assert main(["api-tokens", "revoke", tenant, "helpdesk"]) == 0
    refused = get(f"{api_url}/api/v1/templates/stats", token)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"

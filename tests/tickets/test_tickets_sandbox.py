"""The Zendesk sandbox itself: deterministic from a seed, Zendesk's paging rules, the HTTP
control endpoints and the route-provider contract of the sandbox server."""

from __future__ import annotations

import base64

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from sandbox.server import SandboxConfig, build_app, start_in_thread
from sandbox.zendesk import SANDBOX_EMAIL, SANDBOX_TOKEN, RateLimits, ZendeskSandbox
from sandbox.zendesk import routes as zendesk_routes

AUTH = {
    "Authorization": "Basic "
    + base64.b64encode(f"{SANDBOX_EMAIL}/token:{SANDBOX_TOKEN}".encode()).decode()
}


def test_same_seed_same_data_other_seed_other_data(monkeypatch):
    # the data is generated relative to the sandbox clock: freeze it, or two sandboxes built on
    # either side of a second boundary differ by a second
    monkeypatch.setattr("sandbox.zendesk.time.time", lambda: 1_790_000_000.0)
    one, two = ZendeskSandbox(seed=5, tickets=300), ZendeskSandbox(seed=5, tickets=300)
    assert one.truth_tickets() == two.truth_tickets()
    assert one.truth_comments() == two.truth_comments()
    assert one.apply_changes(new=3, updated=5, deleted=2, comments=7).as_dict() == (
        two.apply_changes(new=3, updated=5, deleted=2, comments=7).as_dict()
    )
    assert one.truth_tickets().keys() == two.truth_tickets().keys()
    other = ZendeskSandbox(seed=6, tickets=300)
    assert other.truth_tickets() != ZendeskSandbox(seed=5, tickets=300).truth_tickets()


def test_realistic_fields():
    tickets = ZendeskSandbox(seed=5, tickets=500).truth_tickets().values()
    assert all(len(t["custom_fields"]) == 5 and "channel" in t["via"] for t in tickets)
    assert any(t["tags"] for t in tickets)
    assert any(t["satisfaction_rating"].get("score") in ("good", "bad") for t in tickets)
    assert any(not t["subject"].isascii() for t in tickets)


def test_events_pages_sharing_one_second_are_extended():
    sandbox = ZendeskSandbox(seed=9, tickets=2000, comments_per_ticket=4.0)
    second, count = max(
        ((ts, sum(1 for k in sandbox._event_keys if k[0] == ts)) for ts, _ in sandbox._event_keys),
        key=lambda pair: pair[1],
    )
    assert count > 100  # the bulk import put many comments in one second
    page = sandbox.ticket_events(base="http://x", start_time=second, per_page=100)
    assert page["count"] == count and page["end_time"] == second
    with pytest.raises(Exception, match="older than one minute"):
        sandbox.ticket_events(base="http://x", start_time=sandbox.now())


def test_http_control_endpoints_and_provider_contract():
    sandbox = ZendeskSandbox(seed=3, tickets=40, rate_limits=RateLimits(None, None))

    def extra_routes(config):
        async def hello(request):
            return PlainTextResponse(f"hello, seed {config.seed}")

        return [Route("/extra/hello", hello)]

    config = SandboxConfig(extra={"zendesk_accounts": {"default": sandbox}})
    base_url, stop = start_in_thread(build_app(config, [zendesk_routes, extra_routes]))
    try:
        assert httpx.get(f"{base_url}/healthz").json() == {"ok": True}
        changed = httpx.post(
            f"{base_url}/_sandbox/zendesk/default/changes", json={"new": 2, "deleted": 1}
        )
        assert changed.json() == {"new": 2, "updated": 0, "deleted": 1, "comments": 0}
        truth = httpx.get(f"{base_url}/_sandbox/zendesk/default/truth").json()
        assert (truth["tickets"], truth["deleted"]) == (42, 1)
        assert (
            httpx.post(f"{base_url}/_sandbox/zendesk/default/changes", json=[1]).status_code == 400
        )
        bad = httpx.post(f"{base_url}/_sandbox/zendesk/default/faults", json={"kinds": ["boom"]})
        assert bad.status_code == 400
        ok = httpx.post(
            f"{base_url}/_sandbox/zendesk/default/faults", json={"kinds": ["500"], "every": 1}
        )
        assert ok.status_code == 200
        url = f"{base_url}/api/v2/incremental/tickets/cursor.json"
        assert httpx.get(url, params={"start_time": 0}, headers=AUTH).status_code == 500
        httpx.post(f"{base_url}/_sandbox/zendesk/default/faults", json={"kinds": []})
        first = httpx.get(url, params={"start_time": 0, "per_page": 30}, headers=AUTH).json()
        assert first["after_url"].startswith(base_url) and not first["end_of_stream"]
        rest = httpx.get(first["after_url"], headers=AUTH).json()
        assert len(first["tickets"]) + len(rest["tickets"]) == 42 and rest["end_of_stream"]
        assert httpx.get(url, params={"cursor": "garbage"}, headers=AUTH).status_code == 400
        assert httpx.get(url, params={"start_time": 0}).status_code == 401
        assert httpx.get(f"{base_url}/extra/hello").text == "hello, seed 1"
    finally:
        stop()

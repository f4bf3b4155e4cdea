"""Helpers shared by the tickets tests: materialization metadata, and the exact comparison of
a desk's rows with a sandbox's ground truth."""

from __future__ import annotations

import httpx

from resources.zendesk import ZendeskApi, ZendeskClient
from sandbox.zendesk import ZendeskSandbox, endpoint_for_path

# base URL -> the sandbox account served there (filled by the SandboxHost fixture)
SANDBOXES: dict[str, ZendeskSandbox] = {}


class StallAwareTransport(httpx.BaseTransport):
    """Real HTTP, where only the request the sandbox is about to stall (its "timeout" fault,
    see `ZendeskSandbox.upcoming_fault`) gets a short read timeout. That request times out for
    certain and fast, and no other request can time out just because the machine is busy.
    Requests to one account must come one at a time (as a sync's do) for the look-ahead to hold."""

    def __init__(self, sandbox: ZendeskSandbox, stalled_read_seconds: float = 0.2):
        self.sandbox = sandbox
        self.stalled_read_seconds = stalled_read_seconds
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_for_path(request.url.path)
        if endpoint and self.sandbox.upcoming_fault(endpoint) == "timeout":
            timeout = dict(request.extensions.get("timeout") or {})
            request.extensions["timeout"] = {**timeout, "read": self.stalled_read_seconds}
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class SandboxZendeskClient(ZendeskClient):
    """The Zendesk resource, talking to sandbox accounts through `StallAwareTransport`."""

    def open(
        self,
        *,
        desk: str,
        base_url: str,
        credentials,
        export_rate_per_minute: int,
        api_rate_per_minute: int,
    ) -> ZendeskApi:
        sandbox = SANDBOXES.get(base_url.rstrip("/"))
        return ZendeskApi(
            desk=desk,
            base_url=base_url,
            credentials=credentials,
            export_rate_per_minute=export_rate_per_minute,
            api_rate_per_minute=api_rate_per_minute,
            timeout_seconds=self.timeout_seconds,
            max_attempts=self.max_attempts,
            backoff_base_seconds=self.backoff_base_seconds,
            transport=StallAwareTransport(sandbox) if sandbox is not None else None,
        )


def zendesk_resource(settings, *, page_size: int = 1000, timeout: float = 30.0):
    return SandboxZendeskClient(
        home=str(settings.home),
        secret_key=settings.secret_key or "",
        page_size=page_size,
        events_page_size=page_size,
        timeout_seconds=timeout,
        backoff_base_seconds=0.05,
        max_attempts=8,
    )


def materialized_metadata(result) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in materialization.metadata.items()
        }
    return out


def assert_matches_truth(db, desk, sandbox: ZendeskSandbox) -> None:
    """The desk's rows equal the sandbox's ground truth exactly."""
    truth = sandbox.truth_tickets()
    rows = db.execute(
        "select ticket_id, status, is_deleted, raw_data, generated_at, tenant_id, req_name, "
        "assignee_name, group_name from raw.zendesk_tickets where desk_id = %s",
        (desk.desk_id,),
    ).fetchall()
    assert len(rows) == len(truth)
    by_id = {r[0]: r for r in rows}
    assert set(by_id) == set(truth)
    for tid, ticket in truth.items():
        _, status, is_deleted, raw, generated, tenant, req_name, assignee_name, group_name = by_id[
            tid
        ]
        assert raw == ticket, f"ticket {tid} differs from the sandbox"
        assert status == ticket["status"]
        assert is_deleted == (ticket["status"] == "deleted")
        assert int(generated.timestamp()) == ticket["generated_timestamp"]
        assert tenant == desk.tenant_id
        assert req_name == sandbox.users[ticket["requester_id"]]["name"]
        if ticket["assignee_id"]:
            assert assignee_name == sandbox.users[ticket["assignee_id"]]["name"]
        if ticket["group_id"]:
            assert group_name == sandbox.groups[ticket["group_id"]]["name"]
    comments = sandbox.truth_comments()
    stored = db.execute(
        "select comment_id, ticket_id, author_id, public, body, tenant_id "
        "from raw.zendesk_ticket_comments where desk_id = %s",
        (desk.desk_id,),
    ).fetchall()
    assert len(stored) == len(comments)  # primary key: each at most once; count: each once
    for cid, ticket_id, author_id, public, body, tenant in stored:
        expected = comments[cid]
        assert (ticket_id, author_id, public, body) == (
            expected["ticket_id"],
            expected["author_id"],
            expected["public"],
            expected["body"],
        )
        assert tenant == desk.tenant_id
    users = sandbox.truth_users()
    stored_users = dict(
        db.execute(
            "select user_id, name from raw.zendesk_users where desk_id = %s", (desk.desk_id,)
        ).fetchall()
    )
    assert stored_users == {uid: u["name"] for uid, u in users.items()}

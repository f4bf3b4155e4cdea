"""Helpers shared by the tickets tests: materialization metadata, and the exact comparison of
a desk's rows with a sandbox's ground truth."""

from __future__ import annotations

from sandbox.zendesk import ZendeskSandbox


def zendesk_resource(settings, *, page_size: int = 1000, timeout: float = 30.0):
    from resources.zendesk import ZendeskClient

    return ZendeskClient(
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

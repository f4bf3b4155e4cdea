"""The Zendesk feedback source keeps a cursor on the tickets domain's change sequence: a pull
reads what changed since the last one (its own `pulled_fetched` counter), never a transaction
that commits late, and a desk added later starts from its beginning."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest
from psycopg.types.json import Jsonb

from assets.tickets.store import committed_changes_bound

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
REQUESTER, AGENT = 900, 901


@pytest.fixture
def desk(db):
    """A desk of its own tenant (inactive, so no desk sync sensor of another test touches it)."""

    def make(tenant: str) -> tuple[int, str]:
        name = f"fb-desk-{uuid.uuid4().hex[:8]}"
        desk_id = db.execute(
            "insert into control.desks (name, tenant_id, subdomain, base_url, auth_kind,"
            " auth_email, token_encrypted, active) values (%s, %s, %s, 'http://127.0.0.1:1',"
            " 'token', 'a@example.com', '\\x00', false) returning desk_id",
            (name, tenant, name),
        ).fetchone()[0]
        return desk_id, name

    return make


def _ticket(conn, desk_id: int, tenant: str, ticket_id: int, **satisfaction) -> None:
    """Insert or update a ticket as the ticket loader does (an update takes a new change number)."""
    raw = {"id": ticket_id, "satisfaction_rating": satisfaction} if satisfaction else {}
    conn.execute(
        "insert into raw.zendesk_tickets as t (desk_id, ticket_id, tenant_id, status, subject,"
        " requester_id, req_name, created_at, updated_at, generated_at, raw_data)"
        " values (%s, %s, %s, 'open', %s, %s, 'Rita', %s, %s, %s, %s)"
        " on conflict (desk_id, ticket_id) do update set raw_data = excluded.raw_data,"
        " updated_at = excluded.updated_at, change_seq = excluded.change_seq",
        (desk_id, ticket_id, tenant, f"Ticket {ticket_id}", REQUESTER, NOW, datetime.now(UTC),
         NOW, Jsonb(raw)),
    )  # fmt: skip


def _comment(conn, desk_id: int, tenant: str, ticket_id: int, comment_id: int, text: str) -> None:
    conn.execute(
        "insert into raw.zendesk_ticket_comments (desk_id, comment_id, tenant_id, ticket_id,"
        " author_id, public, body, created_at, raw_data) values (%s, %s, %s, %s, %s, true, %s,"
        " %s, '{}')",
        (desk_id, comment_id, tenant, ticket_id, REQUESTER, text,
         NOW + timedelta(minutes=comment_id)),
    )  # fmt: skip


def _pull(workspace, dagster_resources) -> dict:
    from assets.feedback.defs import feedback_items

    result = dg.materialize(
        [feedback_items],
        resources=dagster_resources,
        run_config={"ops": {"feedback_items": {"config": {"workspace": workspace.name}}}},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("feedback_items")[0].metadata
    return {k: metadata[f"pulled_{k}"].value for k in ("fetched", "new", "updated")}


def _items(db, workspace) -> dict[str, tuple]:
    rows = db.execute(
        "select external_id, text, rating from raw.feedback_items where workspace_id = %s",
        (workspace.workspace_id,),
    ).fetchall()
    return {external_id.split(":", 2)[0] + ":" + external_id.rsplit(":", 1)[1]: (text, rating)
            for external_id, text, rating in rows}  # fmt: skip


def test_a_pull_reads_only_what_changed_since_the_last_one(
    db, desk, make_workspace, add_source, dagster_resources
):
    tenant = f"fbz-{uuid.uuid4().hex[:8]}"
    desk_id, desk_name = desk(tenant)
    for ticket_id in range(1, 51):
        _ticket(db, desk_id, tenant, ticket_id)
        _comment(db, desk_id, tenant, ticket_id, 10 * ticket_id, f"Comment on {ticket_id}")
    workspace = make_workspace(tenant=tenant)
    add_source(workspace, "zendesk", "helpdesk", desk=[desk_name])

    # the first pull reads every comment (50) and ticket row of the desk's comments
    assert _pull(workspace, dagster_resources) == {"fetched": 50, "new": 50, "updated": 0}
    # nothing changed: nothing read, not one comment row
    assert _pull(workspace, dagster_resources) == {"fetched": 0, "new": 0, "updated": 0}

    # one new comment on an old ticket: one row read, one item
    _comment(db, desk_id, tenant, 7, 71, "A follow-up that arrived later")
    assert _pull(workspace, dagster_resources) == {"fetched": 1, "new": 1, "updated": 0}
    assert _items(db, workspace)["comment:71"] == ("A follow-up that arrived later", None)

    # a ticket's rating: its comments (2) and its rating row are read; the rating is new
    _ticket(db, desk_id, tenant, 7, score="bad", comment="Too slow")
    assert _pull(workspace, dagster_resources) == {"fetched": 3, "new": 1, "updated": 0}
    # the same ticket updated again with the same rating: read, but nothing written
    _ticket(db, desk_id, tenant, 7, score="bad", comment="Too slow")
    assert _pull(workspace, dagster_resources) == {"fetched": 3, "new": 0, "updated": 0}
    # the rating changed: the item is updated in place
    _ticket(db, desk_id, tenant, 7, score="good", comment="Sorted after all")
    assert _pull(workspace, dagster_resources)["updated"] == 1
    assert _items(db, workspace)["satisfaction:7"] == ("Sorted after all", "good")
    assert len(_items(db, workspace)) == 52


def test_a_comment_loaded_before_its_ticket_is_read_when_the_ticket_arrives(
    db, desk, make_workspace, add_source, dagster_resources
):
    tenant = f"fbz-{uuid.uuid4().hex[:8]}"
    desk_id, desk_name = desk(tenant)
    workspace = make_workspace(tenant=tenant)
    add_source(workspace, "zendesk", "helpdesk", desk=[desk_name])
    _comment(db, desk_id, tenant, 5, 50, "Written before the ticket row landed")
    # without its ticket the comment's author cannot be told to be the requester: no item yet
    assert _pull(workspace, dagster_resources) == {"fetched": 1, "new": 0, "updated": 0}
    _ticket(db, desk_id, tenant, 5)
    assert _pull(workspace, dagster_resources) == {"fetched": 1, "new": 1, "updated": 0}
    assert set(_items(db, workspace)) == {"comment:50"}


def test_a_desk_added_to_the_source_later_is_read_from_its_beginning(
    db, desk, make_workspace, add_source, dagster_resources
):
    from assets.feedback.store import update_source_config

    tenant = f"fbz-{uuid.uuid4().hex[:8]}"
    (first, first_name), (second, second_name) = desk(tenant), desk(tenant)
    for desk_id in (first, second):
        _ticket(db, desk_id, tenant, 1)
        _comment(db, desk_id, tenant, 1, 10, f"On desk {desk_id}")
    workspace = make_workspace(tenant=tenant)
    source, _ = add_source(workspace, "zendesk", "helpdesk", desk=[first_name])
    assert _pull(workspace, dagster_resources)["new"] == 1
    with psycopg.connect(db.info.dsn, autocommit=False) as conn:
        update_source_config(conn, source.source_id, {"desks": [first_name, second_name]})
    assert _pull(workspace, dagster_resources) == {"fetched": 1, "new": 1, "updated": 0}


def test_the_read_bound_waits_for_a_writer_in_flight_so_a_late_commit_is_not_skipped(
    db, desk, db_url
):
    tenant = f"fbz-{uuid.uuid4().hex[:8]}"
    desk_id, _ = desk(tenant)
    with psycopg.connect(db_url) as writer, psycopg.connect(db_url) as reader:
        _ticket(writer, desk_id, tenant, 1)  # not committed: the writer holds its number
        taken = writer.execute(
            "select change_seq from raw.zendesk_tickets where desk_id = %s", (desk_id,)
        ).fetchone()[0]
        # while it is in flight no bound is given (a bound past it could skip it)
        assert committed_changes_bound(reader, wait_seconds=0.2) is None
        writer.commit()
        bound = committed_changes_bound(reader, wait_seconds=5)
        assert bound is not None and bound >= taken

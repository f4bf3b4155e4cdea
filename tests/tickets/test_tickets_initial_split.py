"""A desk's first comment sync reads the oldest tickets' comments per ticket while the ticket
events export starts at the split time: exact when the account changes in the middle of it, and
when a ticket is deleted before its comments were read (the export fills that gap)."""

from __future__ import annotations

import threading
import time

import pytest

from sandbox.zendesk import RateLimits, ZendeskSandbox
from tests.tickets.helpers import assert_matches_truth, materialized_metadata

pytestmark = pytest.mark.slow

FAST = RateLimits(export_per_minute=600, api_per_minute=6000)
PAGE = 100  # 1,000 tickets with 4 comments: 40 export pages, enough for a split


def split_state(db, desk) -> tuple:
    return db.execute(
        "select comments_split_at, comments_backfill_after, comments_gap_from, events_cursor "
        "from control.desks where desk_id = %s",
        (desk.desk_id,),
    ).fetchone()


def stored_comments(db, desk) -> list[int]:
    return [
        row[0]
        for row in db.execute(
            "select comment_id from raw.zendesk_ticket_comments where desk_id = %s",
            (desk.desk_id,),
        )
    ]


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sync_in_thread(run_sync, desk) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def target() -> None:
        out["result"] = run_sync(desk, page_size=PAGE, raise_on_error=False)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


def test_the_account_changing_during_a_split_first_sync_loses_nothing(db, make_desk, run_sync):
    sandbox = ZendeskSandbox(seed=71, tickets=1000, comments_per_ticket=4.0, rate_limits=FAST)
    desk = make_desk(sandbox)
    # the export waits at its first request until the per-ticket reading is over and the
    # account has changed: new comments on tickets already read per ticket, new, updated and
    # deleted tickets
    with sandbox.holding(lambda endpoint: endpoint == "ticket_events_export") as hold:
        thread, out = sync_in_thread(run_sync, desk)
        wait_until(hold.held.is_set, "the events export's first request")
        split_at = split_state(db, desk)[0]
        assert split_at is not None
        head = [tid for tid, t in sandbox.tickets.items() if t["_created"] < split_at]
        assert 0 < len(head) < 1000
        wait_until(lambda: split_state(db, desk)[1] == max(head), "the per-ticket reading")
        before = set(stored_comments(db, desk))
        assert before == {c["id"] for tid in head for c in sandbox.comments[tid]}
        changes = sandbox.apply_changes(new=5, updated=10, deleted=5, comments=80)
    thread.join(120)
    assert out["result"].success
    truth = sandbox.truth_comments()
    on_read_tickets = [cid for cid in changes.new_comment_ids if truth[cid]["ticket_id"] in head]
    assert on_read_tickets  # comments came to tickets whose comments were already read
    stored = stored_comments(db, desk)
    assert sorted(stored) == sorted(truth)  # every comment once, those added meanwhile too
    first = materialized_metadata(out["result"])["zendesk_ticket_comments"]
    assert first["tickets_read_per_ticket"] == len(head)
    assert first["requests_by_endpoint"]["ticket_comments"] == len(head)
    assert first["split_at"] == split_at
    assert split_state(db, desk)[:3] == (None, None, None)  # the first sync is over

    # steady state: the export alone, from its cursor; the tickets catch up with the changes
    second = materialized_metadata(run_sync(desk, page_size=PAGE))["zendesk_ticket_comments"]
    assert "ticket_comments" not in second["requests_by_endpoint"]
    assert second["tickets_read_per_ticket"] == 0 and second["rows_inserted"] == 0
    assert_matches_truth(db, desk, sandbox)


def test_a_ticket_deleted_before_its_comments_were_read_comes_from_the_export(
    db, make_desk, run_sync
):
    sandbox = ZendeskSandbox(seed=72, tickets=1000, comments_per_ticket=4.0, rate_limits=FAST)
    desk = make_desk(sandbox)
    oldest = sorted(sandbox.tickets)[:3]
    with sandbox.holding(lambda endpoint: endpoint == "ticket_comments") as hold:
        thread, out = sync_in_thread(run_sync, desk)
        wait_until(hold.held.is_set, "the first per-ticket request")
        sandbox.delete_tickets(oldest)  # their comments are no longer served per ticket: 404
    thread.join(120)
    assert out["result"].success
    first = materialized_metadata(out["result"])["zendesk_ticket_comments"]
    assert first["gap_pages"] > 0
    assert sorted(stored_comments(db, desk)) == sorted(sandbox.truth_comments())
    assert split_state(db, desk)[:3] == (None, None, None)
    run_sync(desk, page_size=PAGE)  # the deletions reach the tickets
    assert_matches_truth(db, desk, sandbox)


def test_a_split_never_lies_after_a_deleted_ticket(db, make_desk, run_sync):
    sandbox = ZendeskSandbox(seed=73, tickets=1000, comments_per_ticket=4.0, rate_limits=FAST)
    deleted = sorted(sandbox.tickets)[100]
    sandbox.delete_tickets([deleted])
    desk = make_desk(sandbox)
    metadata = materialized_metadata(run_sync(desk, page_size=PAGE))["zendesk_ticket_comments"]
    assert metadata["split_at"] == sandbox.tickets[deleted]["_created"]
    assert metadata["tickets_read_per_ticket"] == 100
    assert metadata["gap_pages"] == 0
    assert_matches_truth(db, desk, sandbox)


def test_small_desks_and_later_syncs_use_the_export_alone(db, make_desk, run_sync):
    sandbox = ZendeskSandbox(seed=74, tickets=1000, comments_per_ticket=4.0, rate_limits=FAST)
    desk = make_desk(sandbox)
    first = materialized_metadata(run_sync(desk))["zendesk_ticket_comments"]  # 4 pages of 1000
    assert first["split_at"] == -1 and "ticket_comments" not in first["requests_by_endpoint"]
    assert_matches_truth(db, desk, sandbox)

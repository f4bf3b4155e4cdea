"""End to end: sandbox desks synced over real HTTP into the real warehouse, compared exactly
with the sandbox's ground truth, also under injected faults; two desks side by side; a wrong
token."""

from __future__ import annotations

import dagster as dg
import pytest

from sandbox.zendesk import RateLimits, ZendeskSandbox
from tests.tickets.helpers import assert_matches_truth, materialized_metadata

pytestmark = pytest.mark.slow

FAST = RateLimits(export_per_minute=600, api_per_minute=6000)


def desk_row(db, desk):
    return db.execute(
        "select ticket_cursor, events_cursor, last_synced_at, last_sync_error "
        "from control.desks where desk_id = %s",
        (desk.desk_id,),
    ).fetchone()


def test_sync_changes_and_resync_equal_ground_truth(db, make_desk, run_sync):
    sandbox = ZendeskSandbox(seed=11, tickets=5000, comments_per_ticket=4.0, rate_limits=FAST)
    assert len(sandbox.truth_comments()) == 20000
    desk = make_desk(sandbox)

    first = materialized_metadata(run_sync(desk))
    assert first["zendesk_tickets"]["rows_inserted"] == 5000
    assert first["zendesk_ticket_comments"]["rows_inserted"] == 20000
    assert first["zendesk_tickets"]["throttled_429s"] == 0
    assert_matches_truth(db, desk, sandbox)
    cursor, events_cursor, synced_at, error = desk_row(db, desk)
    assert cursor and events_cursor and synced_at and error is None

    changes = sandbox.apply_changes(new=120, updated=300, deleted=40, comments=500)
    second = materialized_metadata(run_sync(desk))
    tickets = second["zendesk_tickets"]
    assert tickets["rows_inserted"] == 120
    # updated + deleted + tickets that got a comment, each counted once
    touched = set(changes.updated_ticket_ids) | set(changes.deleted_ticket_ids)
    all_comments = sandbox.truth_comments()
    commented = {all_comments[cid]["ticket_id"] for cid in changes.new_comment_ids}
    assert tickets["rows_updated"] == len((touched | commented) - set(changes.new_ticket_ids))
    assert tickets["rows_deleted"] == 40
    assert second["zendesk_ticket_comments"]["rows_inserted"] == 120 + 500
    assert_matches_truth(db, desk, sandbox)
    deleted = db.execute(
        "select count(*) from raw.zendesk_tickets where desk_id = %s and is_deleted",
        (desk.desk_id,),
    ).fetchone()[0]
    assert deleted == 40

    # nothing new: a third sync changes nothing and keeps the cursor
    third = materialized_metadata(run_sync(desk))
    assert third["zendesk_tickets"]["rows_inserted"] == 0
    assert third["zendesk_ticket_comments"]["rows_inserted"] == 0
    assert_matches_truth(db, desk, sandbox)


def timeouts(metadata: dict) -> int:
    return sum(m.get("errors", {}).get("timeout", 0) for m in metadata.values())


def test_exact_under_429s_5xx_and_timeouts(db, make_desk, run_sync):
    # a "timeout" is a request the sandbox stalls for 30 s; the sync's client gives that one
    # request (and no other) a 0.2 s read timeout (tests/tickets/helpers.py StallAwareTransport)
    sandbox = ZendeskSandbox(
        seed=12, tickets=5000, comments_per_ticket=4.0, rate_limits=FAST, timeout_delay=30.0
    )
    desk = make_desk(sandbox)
    kinds = ["429", "429_no_retry_after", "500", "503", "timeout"]
    sandbox.inject_faults(kinds, every=3, limit=10)
    first = materialized_metadata(run_sync(desk))
    assert_matches_truth(db, desk, sandbox)
    # a first sync: the oldest tickets' comments were read per ticket, 8 at a time, and some of
    # those requests met the faults and were retried
    comments = first["zendesk_ticket_comments"]
    assert comments["tickets_read_per_ticket"] > 0
    assert comments["requests_by_endpoint"]["ticket_comments"] > comments["tickets_read_per_ticket"]
    served = {k: sandbox.responses[k] for k in kinds}
    assert all(served.values()), served  # every kind of fault really happened
    assert first["zendesk_tickets"]["throttled_429s"] + first["zendesk_ticket_comments"][
        "throttled_429s"
    ] >= (served["429"] + served["429_no_retry_after"])
    # no request but a stalled one timed out; with per-ticket requests 8 at a time the client
    # cannot always tell which request the sandbox will stall, and one it did not warn of waits
    # out the stall instead (and is retried all the same)
    assert timeouts(first) <= served["timeout"]

    sandbox.apply_changes(new=50, updated=200, deleted=25, comments=300)
    sandbox.inject_faults(kinds, every=1, limit=5)
    second = materialized_metadata(run_sync(desk))
    assert sandbox.fault_plan.served == 5
    assert timeouts(second) == 1
    assert_matches_truth(db, desk, sandbox)


def test_two_desks_side_by_side_do_not_mix(db, make_desk, run_sync):
    one = ZendeskSandbox(seed=21, tickets=400, comments_per_ticket=3.0, rate_limits=FAST)
    two = ZendeskSandbox(seed=22, tickets=300, comments_per_ticket=2.0, rate_limits=FAST)
    desk_one, desk_two = make_desk(one), make_desk(two, oauth=True)
    run_sync(desk_one)
    run_sync(desk_two)
    one.apply_changes(updated=30, deleted=5, comments=20)
    run_sync(desk_two)
    run_sync(desk_one)
    # the same ticket ids exist in both desks, with each desk's own content
    assert_matches_truth(db, desk_one, one)
    assert_matches_truth(db, desk_two, two)
    mixed = db.execute(
        "select count(*) from raw.zendesk_tickets where desk_id = %s and tenant_id <> %s",
        (desk_one.desk_id, desk_one.tenant_id),
    ).fetchone()[0]
    assert mixed == 0


def test_wrong_token_fails_naming_the_desk_and_keeps_the_cursor(
    platform, db, make_desk, run_sync, resources
):
    """In both shapes of the platform: the failed run raises its alert (on SNS too)."""
    sandbox = ZendeskSandbox(seed=31, tickets=200, rate_limits=FAST)
    desk = make_desk(sandbox)
    run_sync(desk)
    before = desk_row(db, desk)
    sandbox.api_token = "rotated-token"  # the stored token is now wrong
    sandbox.apply_changes(new=5)
    result = run_sync(desk, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.event_specific_data.error.message
    assert desk.name in message and "401" in message and "credentials" in message
    assert "sandbox-api-token" not in message
    after = desk_row(db, desk)
    assert after[:3] == before[:3]  # cursors and last_synced_at untouched
    assert desk.name in after[3] and "sandbox-api-token" not in after[3]
    count = db.execute(
        "select count(*) from raw.zendesk_tickets where desk_id = %s", (desk.desk_id,)
    ).fetchone()[0]
    assert count == 200

    # the daemon's run-failure sensor sees the failed run: an alert for the operator
    from sensors.alerts import alert_on_run_failure

    with dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure",
        dagster_instance=run_sync.instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alerts": resources["alerts"]},
    ) as context:
        alert_on_run_failure(context.for_run_failure())
    stored = db.execute(
        "select source, details->'tags' from control.alerts where details->>'run_id' = %s",
        (result.run_id,),
    ).fetchall()
    assert stored == [(f"run:{result.dagster_run.job_name}", {"dagster/partition": desk.name})]
    if platform.is_aws:
        (published,) = platform.published_alerts()
        assert published["run_id"] == result.run_id
        assert published["tags"] == {"dagster/partition": desk.name}

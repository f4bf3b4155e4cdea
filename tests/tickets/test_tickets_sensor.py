"""The desk sync sensor against the real warehouse and a Dagster instance: partitions follow
control.desks, due desks get one run each, in-progress runs block, dead runs do not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

import sensors.tickets as desk_sensor
from assets.tickets.rules import DESK_TAG
from sandbox.zendesk import RateLimits, ZendeskSandbox
from sensors.tickets import DeskState, desk_sync_sensor, is_due, is_stuck

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FAST = RateLimits(export_per_minute=600, api_per_minute=6000)


def state(active=True, interval=300, synced_ago=None, progress_ago=0):
    return DeskState(
        name="d",
        active=active,
        sync_interval_seconds=interval,
        last_synced_at=None if synced_ago is None else NOW - timedelta(seconds=synced_ago),
        last_progress_at=NOW - timedelta(seconds=progress_ago),
    )


@pytest.mark.parametrize(
    ("desk", "due"),
    [
        (state(synced_ago=None), True),
        (state(synced_ago=299), False),
        (state(synced_ago=300), True),
        (state(active=False, synced_ago=None), False),
        (state(interval=60, synced_ago=61), True),
    ],
)
def test_is_due(desk, due):
    assert is_due(desk, NOW) is due


@pytest.mark.parametrize(
    ("run_age", "progress_age", "stuck"),
    [
        (60, 60, False),
        (1799, 5000, False),  # the run itself started recently
        (5000, 1799, False),  # pages were committed recently
        (1800, 1800, True),
        (90000, 4000, True),
    ],
)
def test_is_stuck(run_age, progress_age, stuck):
    desk = state(progress_ago=progress_age)
    assert is_stuck(desk, NOW - timedelta(seconds=run_age), NOW) is stuck


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def tick(instance, resources):
    context = dg.build_sensor_context(
        instance=instance, resources={"warehouse": resources["warehouse"]}
    )
    return desk_sync_sensor(context)


def requests_for(result, name):
    if isinstance(result, dg.SkipReason):  # nothing due anywhere (e.g. a test run on its own)
        return []
    return [r for r in result.run_requests if r.partition_key == name]


def test_sensor_registers_partitions_and_launches_due_desks(instance, resources, db, make_desk):
    due = make_desk(ZendeskSandbox(seed=51, tickets=5), interval=300)
    fresh = make_desk(ZendeskSandbox(seed=52, tickets=5), interval=300)
    disabled = make_desk(ZendeskSandbox(seed=53, tickets=5))
    db.execute(
        "update control.desks set last_synced_at = now() where desk_id = %s", (fresh.desk_id,)
    )
    db.execute("update control.desks set active = false where desk_id = %s", (disabled.desk_id,))
    instance.add_dynamic_partitions("desks", [f"ghost-{uuid.uuid4().hex[:6]}"])

    result = tick(instance, resources)
    assert isinstance(result, dg.SensorResult)
    added = [
        n
        for r in result.dynamic_partitions_requests
        if isinstance(r, dg.AddDynamicPartitionsRequest)
        for n in r.partition_keys
    ]
    deleted = [
        n
        for r in result.dynamic_partitions_requests
        if isinstance(r, dg.DeleteDynamicPartitionsRequest)
        for n in r.partition_keys
    ]
    assert {due.name, fresh.name, disabled.name} <= set(added)
    assert any(name.startswith("ghost-") for name in deleted)

    (request,) = requests_for(result, due.name)
    slot = int(datetime.now(UTC).timestamp()) // 300
    assert request.run_key in (f"{due.name}:{slot}", f"{due.name}:{slot - 1}")
    assert request.tags[DESK_TAG] == due.name
    assert not requests_for(result, fresh.name)
    assert not requests_for(result, disabled.name)


def test_in_progress_run_blocks_and_dead_runs_do_not(instance, resources, make_desk, monkeypatch):
    desk = make_desk(ZendeskSandbox(seed=54, tickets=5))
    running = create_run_for_test(
        instance,
        job_name="zendesk_desk_sync",
        status=dg.DagsterRunStatus.STARTED,
        tags={DESK_TAG: desk.name},
    )
    assert not requests_for(tick(instance, resources), desk.name)

    # a failed or canceled run never blocks the desk
    instance.report_run_failed(running)
    create_run_for_test(
        instance,
        job_name="zendesk_desk_sync",
        status=dg.DagsterRunStatus.CANCELED,
        tags={DESK_TAG: desk.name},
    )
    assert len(requests_for(tick(instance, resources), desk.name)) == 1

    # a run that stopped making progress is marked failed and the desk launches again
    stuck = create_run_for_test(
        instance,
        job_name="zendesk_desk_sync",
        status=dg.DagsterRunStatus.STARTED,
        tags={DESK_TAG: desk.name},
    )
    monkeypatch.setattr(desk_sensor, "stuck_after_seconds", lambda desk: 0)
    (request,) = requests_for(tick(instance, resources), desk.name)
    assert request.run_key.endswith(f":after-{stuck.run_id[:8]}")
    assert instance.get_run_by_id(stuck.run_id).status == dg.DagsterRunStatus.FAILURE


def test_sensor_run_request_executes_the_desk_sync_job(
    instance, resources, settings, db, make_desk
):
    """Tick -> the requested partition and tags -> the real job -> the desk is synced and no
    longer due on the next tick."""
    from assets.tickets.defs import (
        desks_synced_recently,
        zendesk_desk_sync,
        zendesk_ticket_comments,
        zendesk_tickets,
    )
    from tests.tickets.helpers import zendesk_resource

    sandbox = ZendeskSandbox(seed=55, tickets=60, comments_per_ticket=2.0, rate_limits=FAST)
    desk = make_desk(sandbox)
    result = tick(instance, resources)
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
    (request,) = requests_for(result, desk.name)
    job = dg.Definitions(
        assets=[zendesk_tickets, zendesk_ticket_comments],
        asset_checks=[desks_synced_recently],
        jobs=[zendesk_desk_sync],
        resources={"warehouse": resources["warehouse"], "zendesk": zendesk_resource(settings)},
    ).resolve_job_def("zendesk_desk_sync")
    outcome = job.execute_in_process(
        partition_key=request.partition_key, instance=instance, tags=request.tags
    )
    assert outcome.success
    checks = {c.check_name: c.passed for c in outcome.get_asset_check_evaluations()}
    assert checks == {"no_duplicate_tickets": True, "comment_tickets_exist": True}
    run = instance.get_run_by_id(outcome.run_id)
    assert run.tags[DESK_TAG] == desk.name
    count = db.execute(
        "select count(*) from raw.zendesk_tickets where desk_id = %s", (desk.desk_id,)
    ).fetchone()[0]
    assert count == 60
    assert not requests_for(tick(instance, resources), desk.name)

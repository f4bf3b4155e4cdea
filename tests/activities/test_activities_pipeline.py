"""End to end through Dagster: queue -> sensor -> drain run -> raw.activities, faults included."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import psycopg
import pytest

from resources.warehouse import WarehouseResource
from tests.activities.helpers import activity_definitions, make_event, table_of

FAST_RETRY = {"ops": {"activities": {"config": {"retry_base_seconds": 0.2}}}}


class ReadOnlyWarehouse(WarehouseResource):
    """The real warehouse, but every transaction is read-only: inserts fail as they would with
    the database refusing writes. Injected for one run to show nothing is lost."""

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with super().connection() as conn:
            conn.execute("set transaction read only")
            yield conn


def tick(defs: dg.Definitions, instance, resources, name="activities_queue_sensor"):
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        return sensor.evaluate_tick(context)


def run_drain(defs, instance, run_request, run_config=None, job="activities_drain"):
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance, tags=run_request.tags, run_config=run_config or FAST_RETRY
    )
    assert result.success
    return result


def stored(db, tenant):
    return db.execute(
        "select activity_id, tableoid::regclass::text, category from raw.activities "
        "where tenant_id = %s order by activity_id",
        (tenant,),
    ).fetchall()


def test_valid_duplicate_malformed_and_late_events(
    platform, activity_defs, instance, resources, activity_tables, tenant
):
    """In both shapes of the platform: the same rows, dead letters, alerts and export files."""
    db = activity_tables
    now = datetime.now(UTC)
    late = now - timedelta(days=10)
    early = now + timedelta(days=1)
    valid = [make_event(tenant, n) for n in range(5)]
    valid.append(make_event(tenant, 5, when=late.isoformat(), action="reply"))
    valid.append(
        make_event(
            tenant,
            6,
            when=early.isoformat(),
            actor_type="system",
            actor_id="observer-12",
            action="priority_changed",
            rule={"type": "observer", "id": 12},
        )
    )
    duplicates = [dict(valid[0]), dict(valid[5])]
    no_actor = make_event(tenant, 90)
    del no_actor["actor_id"]
    malformed = [
        no_actor,
        make_event(tenant, 91, when="2026-11-20T10:00:00"),
        make_event(tenant, 92, actor_type="robot"),
        make_event(tenant, 93, when=(now - timedelta(days=200)).isoformat()),
    ]
    queues = resources["queues"]
    queues.send("activities", valid + duplicates + malformed)

    result = tick(activity_defs, instance, resources)
    assert len(result.run_requests) == 1
    run_request = result.run_requests[0]
    assert run_request.tags["supportflow/queue"] == "activities"
    run = run_drain(activity_defs, instance, run_request)

    rows = stored(db, tenant)
    assert [r[0] for r in rows] == sorted(e["activity_id"] for e in valid)
    days = {e["activity_id"]: datetime.fromisoformat(e["occurred_at"]).date() for e in valid}
    for activity_id, table, _category in rows:
        assert table == f"raw.{table_of(days[activity_id])}"
    categories = {r[0]: r[2] for r in rows}
    assert categories[valid[0]["activity_id"]] == "status"
    assert categories[valid[5]["activity_id"]] == "conversation"
    assert categories[valid[6]["activity_id"]] is None  # system activities keep none

    dead = {d.body["activity_id"]: d.error for d in queues.dead_letters("activities")}
    assert set(dead) == {e["activity_id"] for e in malformed}
    assert "actor_id: missing" in dead[f"{tenant}-a90"]
    assert "occurred_at: needs a UTC offset" in dead[f"{tenant}-a91"]
    assert "actor_type: expected 'user' or 'system'" in dead[f"{tenant}-a92"]
    assert "older than the retention period" in dead[f"{tenant}-a93"]
    alert = db.execute(
        "select summary from control.alerts where source = 'queue:activities' "
        "order by alert_id desc limit 1"
    ).fetchone()
    assert alert and "4 message(s)" in alert[0]

    (materialization,) = run.asset_materializations_for_node("activities")
    assert materialization.metadata["inserted"].value == 7
    assert materialization.metadata["rejected"].value == 4
    assert queues.depth("activities") == 0
    skipped = tick(activity_defs, instance, resources)
    assert not skipped.run_requests and "empty" in skipped.skip_message

    # a duplicate arriving after its original was acknowledged: no second effect
    queues.send("activities", [dict(valid[1]), dict(valid[6])])
    run_drain(activity_defs, instance, tick(activity_defs, instance, resources).run_requests[0])
    assert len(stored(db, tenant)) == len(valid)

    # the late day's export file, wherever this shape keeps it, holds that day's user rows
    late_day = late.date().isoformat()
    exported = activity_defs.resolve_job_def("activity_export_daily").execute_in_process(
        instance=instance, partition_key=late_day
    )
    assert exported.success
    frame = pd.read_parquet(
        io.BytesIO(
            platform.read_export(f"activities/tenant={tenant}/date={late_day}/activities.parquet")
        )
    )
    assert list(frame["activity_id"]) == [valid[5]["activity_id"]]
    assert list(frame["action"]) == ["reply"]
    if platform.is_aws:  # the dead-letter alert also went out on the SNS topic
        (published,) = platform.published_alerts()
        assert published["source"] == "queue:activities" and published["count"] == 4
        assert published["subject"] == "supportflow error: queue:activities"


def test_database_failure_during_drain_loses_nothing(
    activity_defs, instance, resources, settings, activity_tables, tenant
):
    db = activity_tables
    events = [make_event(tenant, n) for n in range(5)]
    resources["queues"].send("activities", events)
    failing = activity_definitions(
        {**resources, "warehouse": ReadOnlyWarehouse(database_url=resources["warehouse"].url)},
        settings,
    )
    run_request = tick(failing, instance, resources).run_requests[0]
    run_drain(failing, instance, run_request)
    assert stored(db, tenant) == []
    waiting = db.execute(
        "select count(*), max(receive_count), max(last_error) from control.queue_messages "
        "where queue = 'activities'"
    ).fetchone()
    assert waiting[0] == 5 and waiting[1] == 1 and "read-only" in waiting[2]
    assert resources["queues"].dead_letters("activities") == []

    # the retry delay of the first failure (0.2 s here) passes: wait for exactly that state
    deadline = time.monotonic() + 30
    visible = (
        "select count(*) from control.queue_messages "
        "where queue = 'activities' and visible_at <= now()"
    )
    while db.execute(visible).fetchone()[0] < 5:
        assert time.monotonic() < deadline, "the failed messages never became visible again"
        time.sleep(0.05)
    run_drain(activity_defs, instance, tick(activity_defs, instance, resources).run_requests[0])
    assert [r[0] for r in stored(db, tenant)] == sorted(e["activity_id"] for e in events)
    assert resources["queues"].depth("activities") == 0


@pytest.mark.slow
def test_a_message_failing_five_times_is_dead_lettered_with_an_alert(
    platform, resources, settings, instance, activity_tables, tenant
):
    """Delayed retries through the queue's visibility, then the dead-letter queue and an alert:
    on SQS also published on the SNS topic."""
    db = activity_tables
    resources["queues"].send("activities", [make_event(tenant, 1)])
    failing = activity_definitions(
        {**resources, "warehouse": ReadOnlyWarehouse(database_url=resources["warehouse"].url)},
        settings,
    )
    job = failing.resolve_job_def("activities_drain")
    quick = {"ops": {"activities": {"config": {"retry_base_seconds": 0.01}}}}
    for attempt in range(5):
        if attempt and not platform.retry_is_due(db, "activities"):
            break  # SQS: a drain received the retry twice, and the last receive dead-lettered it
        assert job.execute_in_process(instance=instance, run_config=quick).success
    (dead,) = resources["queues"].dead_letters("activities")
    assert dead.receive_count == 5 and "read-only" in dead.error
    assert dead.body["activity_id"] == f"{tenant}-a1"
    assert resources["queues"].depth("activities") == 0
    assert stored(db, tenant) == []
    alert = db.execute(
        "select details from control.alerts where source = 'queue:activities' "
        "order by alert_id desc limit 1"
    ).fetchone()[0]
    assert alert["count"] == 1 and "read-only" in alert["errors"][0]
    if platform.is_aws:
        (published,) = platform.published_alerts()
        assert published["source"] == "queue:activities" and published["count"] == 1


def test_sensor_launches_one_drain_at_a_time(
    activity_defs, instance, resources, activity_tables, tenant
):
    resources["queues"].send("activities", [make_event(tenant, 1)])
    first = tick(activity_defs, instance, resources)
    (run_request,) = first.run_requests
    job = activity_defs.resolve_job_def("activities_drain")
    instance.create_run_for_job(job_def=job, tags=run_request.tags)  # queued, not yet finished
    waiting = tick(activity_defs, instance, resources)
    assert not waiting.run_requests and "already in progress" in waiting.skip_message

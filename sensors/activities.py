"""Sensors of the activities domain: one drain run at a time per queue (`activities`,
`activity_deletes`), and the re-export of days whose activities changed after their export."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg

from assets.activities.defs import (
    activities_drain_job,
    activity_deletes_drain_job,
    activity_export_job,
    activity_export_partitions,
)
from assets.activities.store import changed_export_days
from resources.warehouse import WarehouseResource
from sensors.queues import queue_drain_sensor
from sensors.runs import runs_in_progress

activities_queue_sensor = queue_drain_sensor(
    name="activities_queue_sensor",
    queue="activities",
    job=activities_drain_job,
    description="Launches a drain run into raw.activities when activity events wait.",
)

activity_deletes_queue_sensor = queue_drain_sensor(
    name="activity_deletes_queue_sensor",
    queue="activity_deletes",
    job=activity_deletes_drain_job,
    description="Launches a drain run of ticket deletes when delete requests wait.",
)


def reexport_requests(
    changed: list[tuple[date, datetime]], first_day: date, today: date
) -> list[dg.RunRequest]:
    """One `activity_export` run per changed day that has a partition; the run key names the
    change, so each change is exported once and a later change again."""
    return [
        dg.RunRequest(
            run_key=f"reexport:{day.isoformat()}:{changed_at.timestamp():.6f}",
            partition_key=day.isoformat(),
            tags={"supportflow/reexport": "late-changes"},
        )
        for day, changed_at in changed
        if first_day <= day < today
    ]


@dg.sensor(
    name="activity_export_changes_sensor",
    job=activity_export_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Re-exports exactly the days whose user activities changed after their export "
    "(late events, ticket deletes), so each day's files always equal the table.",
)
def activity_export_changes_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
):
    with warehouse.connection() as conn:
        changed = changed_export_days(conn)
    first_day = activity_export_partitions.start.date()
    requests = [
        request
        for request in reexport_requests(changed, first_day, datetime.now(UTC).date())
        if not runs_in_progress(
            context.instance,
            {"dagster/partition": request.partition_key},
            job_name=activity_export_job.name,
        )
    ]
    if not requests:
        return dg.SkipReason("no exported day changed since its export")
    return requests


defs = dg.Definitions(
    sensors=[activities_queue_sensor, activity_deletes_queue_sensor, activity_export_changes_sensor]
)

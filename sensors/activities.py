"""Sensors of the activities domain: one drain run at a time per queue (`activities`,
`activity_deletes`), and the re-export of days whose activities changed after their export."""

from __future__ import annotations

from datetime import UTC, datetime

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
from sensors.runs import changed_day_requests

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
    requests = changed_day_requests(
        context.instance,
        activity_export_job.name,
        changed,
        activity_export_partitions.start.date(),
        datetime.now(UTC).date(),
        "reexport",
        {"supportflow/reexport": "late-changes"},
    )
    if not requests:
        return dg.SkipReason("no exported day changed since its export")
    return requests


defs = dg.Definitions(
    sensors=[activities_queue_sensor, activity_deletes_queue_sensor, activity_export_changes_sensor]
)

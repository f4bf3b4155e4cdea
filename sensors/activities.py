"""Sensors of the activities domain: one drain run at a time per queue (`activities`,
`activity_deletes`)."""

from __future__ import annotations

import dagster as dg

from assets.activities.defs import activities_drain_job, activity_deletes_drain_job
from sensors.queues import queue_drain_sensor

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

defs = dg.Definitions(sensors=[activities_queue_sensor, activity_deletes_queue_sensor])

"""Sensors of the activities domain: one drain run at a time per queue (`activities`,
`activity_deletes`). Jobs are named, not imported, so this module never imports assets."""

from __future__ import annotations

from sensors.queues import queue_drain_sensor

activities_queue_sensor = queue_drain_sensor(
    name="activities_queue_sensor",
    queue="activities",
    job_name="activities_drain",
    description="Launches a drain run into raw.activities when activity events wait.",
)

activity_deletes_queue_sensor = queue_drain_sensor(
    name="activity_deletes_queue_sensor",
    queue="activity_deletes",
    job_name="activity_deletes_drain",
    description="Launches a drain run of ticket deletes when delete requests wait.",
)

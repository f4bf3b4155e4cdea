"""The `feedback` queue sensor: launches a drain run of `feedback_ingest_job` (no pulling)."""

from __future__ import annotations

import dagster as dg

from assets.feedback.defs import feedback_ingest_job
from sensors.queues import queue_drain_sensor

feedback_queue_sensor = queue_drain_sensor(
    name="feedback_queue_sensor",
    queue="feedback",
    job=feedback_ingest_job,
    description="Drain pushed feedback (queue `feedback`) into raw.feedback_items and enrich it.",
    run_config={"ops": {"feedback_items": {"config": {"pull": False, "drain": True}}}},
)

defs = dg.Definitions(sensors=[feedback_queue_sensor])

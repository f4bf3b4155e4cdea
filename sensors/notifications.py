"""Sensors of the email delivery domain: one drain run at a time for queue `email_sent`, the
global `email_events` queue (the router) and this pod's `email_events.<pod>` (receipts). Jobs are
named, not imported, so this module never imports assets."""

from __future__ import annotations

import dagster as dg

from sensors.queues import queue_drain_sensor


def email_delivery_sensors(
    *, pod: str, email_sent_job: str, router_job: str, receipts_job: str
) -> list[dg.SensorDefinition]:
    """The three queue sensors; `pod` is this deployment's pod (SUPPORTFLOW_POD)."""
    return [
        queue_drain_sensor(
            name="email_sent_queue_sensor",
            queue="email_sent",
            job_name=email_sent_job,
            description="Launches a drain of sent notifications into raw.notifications.",
        ),
        queue_drain_sensor(
            name="email_events_router_sensor",
            queue="email_events",
            job_name=router_job,
            description="Launches the router moving email events to their pod's queue.",
        ),
        queue_drain_sensor(
            name="email_receipts_queue_sensor",
            queue=f"email_events.{pod}",
            job_name=receipts_job,
            description=f"Launches a drain of delivery receipts from email_events.{pod}.",
        ),
    ]

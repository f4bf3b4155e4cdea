"""Sensors of the email delivery domain: one drain run at a time for queue `email_sent`, the
global `email_events` queue (the router) and this pod's `email_events.<pod>` (receipts)."""

from __future__ import annotations

import dagster as dg

from assets.email.defs import (
    email_events_router_job,
    email_receipts_drain_job,
    email_sent_drain_job,
)
from sensors.queues import queue_drain_sensor


def build_defs(pod: str) -> dg.Definitions:
    """The three queue sensors; `pod` is this deployment's pod (SUPPORTFLOW_POD)."""
    return dg.Definitions(
        sensors=[
            queue_drain_sensor(
                name="email_sent_queue_sensor",
                queue="email_sent",
                job=email_sent_drain_job,
                description="Launches a drain of sent notifications into raw.notifications.",
            ),
            queue_drain_sensor(
                name="email_events_router_sensor",
                queue="email_events",
                job=email_events_router_job,
                description="Launches the router moving email events to their pod's queue.",
            ),
            queue_drain_sensor(
                name="email_receipts_queue_sensor",
                queue=f"email_events.{pod}",
                job=email_receipts_drain_job,
                description=f"Launches a drain of delivery receipts (email_events.{pod}).",
            ),
        ]
    )

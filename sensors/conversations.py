"""Sensors of the conversations domain: one drain run at a time for queue `messages` and for
queue `conversation_events`."""

from __future__ import annotations

import dagster as dg

from assets.conversations.defs import (
    conversation_events_drain_job,
    conversation_messages_drain_job,
)
from sensors.queues import queue_drain_sensor

messages_queue_sensor = queue_drain_sensor(
    name="conversation_messages_queue_sensor",
    queue="messages",
    job=conversation_messages_drain_job,
    description="Launches a drain run of channel messages into conversations when messages wait.",
)

conversation_events_queue_sensor = queue_drain_sensor(
    name="conversation_events_queue_sensor",
    queue="conversation_events",
    job=conversation_events_drain_job,
    description="Launches a drain run of agents' and rules' ticket actions when events wait.",
)

defs = dg.Definitions(sensors=[messages_queue_sensor, conversation_events_queue_sensor])

"""The supportflow code location: every domain's definitions and the platform's resources."""

from __future__ import annotations

import dagster as dg

from assets.activities import defs as activities
from assets.analytics import defs as analytics
from assets.conversations import defs as conversations
from assets.email import defs as email
from assets.feedback import defs as feedback
from assets.tickets import defs as tickets
from orchestration import maintenance
from resources.runtime import build_resources
from resources.settings import Settings
from sensors import activities as activity_sensors
from sensors import alerts as run_alerts
from sensors import conversations as conversation_sensors
from sensors import email as email_sensors
from sensors import feedback as feedback_sensors
from sensors import tickets as ticket_sensors

settings = Settings.from_env()

# Every job is one step (a drain, an export, a dbt build) and each run already has a process of
# its own (a run worker, a pod): steps run in that process instead of one more per step, which
# halves the processes a run starts and keeps `make dev` responsive on a small machine.
defs = dg.Definitions.merge(
    dg.Definitions(resources=build_resources(settings), executor=dg.in_process_executor),
    tickets.defs,
    ticket_sensors.defs,
    activities.build_defs(settings),
    activity_sensors.defs,
    email.build_defs(email.EmailDeliverySettings.from_settings(settings)),
    email_sensors.build_defs(settings.pod),
    feedback.defs,
    feedback_sensors.defs,
    conversations.build_defs(settings),
    conversation_sensors.defs,
    analytics.defs,
    run_alerts.defs,
    maintenance.defs,
)

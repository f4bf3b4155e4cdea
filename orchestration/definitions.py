"""The supportflow code location: assembles each domain's definitions and the shared resources."""

from __future__ import annotations

import dagster as dg

from assets import activities, analytics, feedback, tickets
from assets import notifications as email_delivery
from orchestration import maintenance
from orchestration.runtime import build_resources
from orchestration.settings import Settings
from sensors import alerts as run_alerts

settings = Settings.from_env()

defs = dg.Definitions.merge(
    dg.Definitions(resources=build_resources(settings)),
    analytics.defs,
    activities.defs,
    email_delivery.defs,
    feedback.defs,
    tickets.defs,
    run_alerts.defs,
    maintenance.defs,
)

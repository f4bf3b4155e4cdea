"""Helpers for the activities tests (a module with a unique name, importable from tests)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg

from assets.activities.defs import build_defs
from sensors.activities import defs as sensor_defs


def table_of(day: date) -> str:
    """The partition table of a UTC day as the README and migration 0200 name it:
    raw.activities_pYYYYMMDD (written here independently of `partition_name`)."""
    return "activities_p" + day.isoformat().replace("-", "")


def make_event(tenant: str, n: int, *, when: str | None = None, **overrides) -> dict:
    """A valid activity event; `n` makes its id unique within a test."""
    body = {
        "type": "activity",
        "activity_id": f"{tenant}-a{n}",
        "tenant_id": tenant,
        "ticket_id": 100 + n % 3,
        "actor_type": "user",
        "actor_id": f"agent-{n % 5}",
        "action": "status_changed",
        "occurred_at": when or datetime.now(UTC).isoformat(),
        "changes": {"status": ["open", "pending"]},
    }
    body.update(overrides)
    return body


def activity_definitions(resources: dict, settings) -> dg.Definitions:
    """The activities domain's definitions and sensors, bound to `resources`."""
    import dagster as dg

    return dg.Definitions.merge(
        dg.Definitions(resources=resources), build_defs(settings), sensor_defs
    )

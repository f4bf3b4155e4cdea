"""Helpers for the activities tests (a module with a unique name, importable from tests)."""

from __future__ import annotations

from datetime import UTC, datetime


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

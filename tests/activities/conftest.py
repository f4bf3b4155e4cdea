"""Fixtures for the activities tests: a clean slate of activity tables and unique tenants."""

from __future__ import annotations

import itertools
import uuid

import pytest

from tests.activities.helpers import activity_definitions

_tenants = itertools.count(1)


@pytest.fixture
def tenant() -> str:
    """A tenant id no other test uses, so tests never see each other's rows."""
    return f"t{next(_tenants)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def activity_tables(db):
    """Empty activity tables (ours only) and empty queue tables."""
    db.execute(
        "truncate raw.activities, raw.activity_ids, raw.activity_deleted_tickets, "
        "control.activity_export_days, "
        "control.queue_messages, control.queue_dead_letters, control.queue_acks"
    )
    return db


@pytest.fixture
def instance():
    """A throwaway Dagster instance (runs, event logs) for one test."""
    import dagster as dg

    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def activity_defs(resources, settings):
    """The activities domain's definitions bound to the test resources."""
    return activity_definitions(resources, settings)

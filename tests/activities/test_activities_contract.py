"""The contract the email-delivery consumer relies on: parse_activity + insert_activities."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from assets.activities.rules import (
    InvalidActivity,
    day_of_partition,
    parse_activity,
    partition_name,
)
from assets.activities.store import insert_activities
from tests.activities.helpers import make_event, table_of


def test_insert_is_idempotent_on_activity_id_and_does_not_commit(db_url, activity_tables, tenant):
    now = datetime.now(UTC)
    first = parse_activity(make_event(tenant, 1, when=now.isoformat()))
    # the same id again, even with another timestamp, and twice within one batch
    moved = parse_activity(make_event(tenant, 1, when=(now - timedelta(days=3)).isoformat()))
    second = parse_activity(make_event(tenant, 2, when=now.isoformat()))
    with psycopg.connect(db_url) as conn:
        assert insert_activities(conn, [first, second, first, moved]) == 2
        assert insert_activities(conn, [first, moved]) == 0
        conn.rollback()  # the caller owns the transaction: nothing was committed
    count = activity_tables.execute(
        "select count(*) from raw.activities where tenant_id = %s", (tenant,)
    ).fetchone()[0]
    assert count == 0
    with psycopg.connect(db_url) as conn:
        assert insert_activities(conn, [first, second]) == 2
    with psycopg.connect(db_url) as conn:
        assert insert_activities(conn, [moved, second]) == 0
    rows = activity_tables.execute(
        "select activity_id, tableoid::regclass::text from raw.activities "
        "where tenant_id = %s order by activity_id",
        (tenant,),
    ).fetchall()
    assert rows == [
        (first.activity_id, f"raw.{table_of(now.date())}"),
        (second.activity_id, f"raw.{table_of(now.date())}"),
    ]


def test_system_failure_activity_creates_a_missing_partition(db_url, activity_tables, tenant):
    day = date.today() - timedelta(days=40)
    body = {
        "activity_id": f"{tenant}-bounce",
        "tenant_id": tenant,
        "ticket_id": 7,
        "actor_type": "system",
        "actor_id": "email-delivery",
        "action": "email_delivery_failed",
        "occurred_at": f"{day.isoformat()}T23:30:00-02:00",  # the next UTC day
        "details": {"provider": "mailgun", "recipient": "a@example.com", "reason": "bounced"},
    }
    activity = parse_activity(body)
    assert activity.category is None
    assert activity.day == day + timedelta(days=1)
    with psycopg.connect(db_url) as conn:
        assert insert_activities(conn, [activity]) == 1
    row = activity_tables.execute(
        "select tableoid::regclass::text, details, category from raw.activities "
        "where activity_id = %s",
        (activity.activity_id,),
    ).fetchone()
    assert row == (
        f"raw.{table_of(day + timedelta(days=1))}",
        {"provider": "mailgun", "recipient": "a@example.com", "reason": "bounced"},
        None,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"activity_id": ""}, "activity_id"),
        ({"activity_id": None}, "activity_id"),
        ({"tenant_id": "../etc"}, "tenant_id"),
        ({"ticket_id": -1}, "ticket_id"),
        ({"ticket_id": True}, "ticket_id"),
        ({"ticket_id": "12a"}, "ticket_id"),
        ({"actor_type": "robot"}, "actor_type"),
        ({"actor_id": {"id": 1}}, "actor_id"),
        ({"action": "Status Changed"}, "action"),
        ({"occurred_at": "2026-11-20T10:00:00"}, "occurred_at"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": 1700000000}, "occurred_at"),
        ({"occurred_at": "2999-01-01T00:00:00Z"}, "occurred_at"),
        ({"changes": ["status"]}, "changes"),
        ({"rule": "observer"}, "rule"),
        ({"details": {"rule": {}}}, "details"),
        ({"details": {"note": 1, "changes": {}}}, "details"),
        ({"type": "email"}, "type"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_events_name_the_field(change, field):
    body = make_event("acme", 1, **change)
    with pytest.raises(InvalidActivity, match=rf"^{field}: "):
        parse_activity(body)


def test_missing_field_is_named():
    body = make_event("acme", 1)
    del body["actor_id"]
    with pytest.raises(InvalidActivity, match="^actor_id: missing"):
        parse_activity(body)


def test_insert_on_an_autocommit_connection(db, activity_tables, tenant):
    activity = parse_activity(make_event(tenant, 1))
    assert insert_activities(db, [activity, activity]) == 1
    assert insert_activities(db, [activity]) == 0


@pytest.mark.parametrize(
    ("day", "table"),
    [
        (date(2026, 3, 9), "activities_p20260309"),
        (date(2026, 12, 31), "activities_p20261231"),
        (date(2027, 1, 1), "activities_p20270101"),
    ],
)
def test_partition_names_are_the_documented_ones(day, table):
    assert partition_name(day) == table
    assert day_of_partition(table) == day


@pytest.mark.parametrize("name", ["activities_default", "activities_p2026039", "notes_p20260309"])
def test_other_tables_are_not_partitions(name):
    assert day_of_partition(name) is None


@pytest.mark.parametrize(
    ("details", "from_json"),
    [
        ({"score": float("nan")}, False),
        ({"changes_seen": [1.0, float("inf")]}, False),
        ({"when": datetime(2026, 11, 20, tzinfo=UTC)}, False),
        ({"tags": {"a", "b"}}, False),
        # Python's json module decodes NaN and Infinity literals: the fast path refuses them too
        ({"score": float("nan")}, True),
        ({"changes_seen": [1.0, float("-inf")]}, True),
    ],
)
def test_details_json_cannot_hold_are_refused(details, from_json):
    body = make_event("acme", 1, details=details)
    with pytest.raises(InvalidActivity, match="^details: not JSON-serialisable"):
        parse_activity(body, from_json=from_json)


@pytest.mark.parametrize(
    "details",
    [
        {},
        {"note": "ünïcødé ✓", "n": 12345678901234567890, "x": 0.1, "ok": True},
        {"assignee": [None, "agent-1"], "nested": {"deep": [{"a": None}]}},
        {"text": "the word null inside a string"},
    ],
)
def test_details_fast_path_stores_what_the_checked_path_stores(
    db, activity_tables, tenant, details
):
    checked = parse_activity(make_event(tenant, 1, details=details))
    fast = parse_activity(make_event(tenant, 2, details=details), from_json=True)
    assert json.loads(fast.details_json) == json.loads(checked.details_json)
    assert insert_activities(db, [checked, fast]) == 2
    stored = db.execute(
        "select details from raw.activities where tenant_id = %s order by activity_id", (tenant,)
    ).fetchall()
    assert stored == [(checked.details,), (checked.details,)]

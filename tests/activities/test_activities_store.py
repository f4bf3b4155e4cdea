"""Export files, retention, deletes, partition maintenance and the timeline, through Dagster."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import psycopg
import pytest

from assets.activities import defs as activities
from assets.activities.defs import ActivitySettings
from assets.activities.rules import (
    OTHER_CATEGORY,
    InvalidActivity,
    category_for,
    parse_activity,
    parse_ticket_delete,
)
from assets.activities.store import (
    ensure_partitions,
    insert_activities,
    partition_days,
    ticket_timeline,
)
from orchestration.cli import main as cli_main
from resources.storage import ExportStorage
from tests.activities.helpers import make_event, table_of


def readme_export_dir(tenant: str, day: date) -> str:
    """The export layout the README promises: activities/tenant=<id>/date=<YYYY-MM-DD>/."""
    return f"activities/tenant={tenant}/date={day:%Y-%m-%d}"


def at(day: date, hh: int, mm: int = 0, ss: int = 0, us: int = 0) -> str:
    return datetime(day.year, day.month, day.day, hh, mm, ss, us, tzinfo=UTC).isoformat()


def store(db_url: str, bodies: list[dict]) -> int:
    with psycopg.connect(db_url) as conn:
        return insert_activities(conn, [parse_activity(b) for b in bodies])


@pytest.mark.parametrize(
    ("actor_type", "action", "category"),
    [
        ("user", "reply", "conversation"),
        ("user", "note", "conversation"),
        ("user", "status_changed", "status"),
        ("user", "ticket_reopened", "status"),
        ("user", "assigned", "assignment"),
        ("user", "group_changed", "assignment"),
        ("user", "priority_changed", "property"),
        ("user", "tags_added", "property"),
        ("user", "ticket_merged", "lifecycle"),
        ("user", "watcher_added", "collaboration"),
        ("user", "timer_started", "time_tracking"),
        ("user", "something_new", OTHER_CATEGORY),
        ("system", "status_changed", None),
        ("system", "email_delivery_failed", None),
    ],
)
def test_category_for(actor_type, action, category):
    assert category_for(actor_type, action) == category


def test_export_writes_exactly_the_days_user_activities_per_tenant(
    db_url, activity_tables, tenant, tmp_path, resources
):
    other = tenant + "-other"
    day = datetime.now(UTC).date() - timedelta(days=1)
    before, after = day - timedelta(days=1), day + timedelta(days=1)
    bodies = [
        make_event(tenant, 1, when=at(day, 0), action="reply"),  # the first instant of the day
        make_event(tenant, 2, when=at(day, 23, 59, 59, 999999), action="assigned"),
        make_event(tenant, 3, when=at(day, 12), action="note", changes=None),
        make_event(tenant, 4, when=at(day, 9), actor_type="system", actor_id="dispatcher-1"),
        make_event(tenant, 5, when=at(before, 23, 59, 59, 999999)),
        make_event(tenant, 6, when=at(after, 0)),
        make_event(other, 1, when=at(day, 8), details={"note": 'zoë, "quoted"\nline'}),
    ]
    assert store(db_url, bodies) == len(bodies)
    storage = ExportStorage(export_url=str(tmp_path))
    result = dg.materialize(
        [activities.activity_export],
        partition_key=day.isoformat(),
        resources={"warehouse": resources["warehouse"], "export_storage": storage},
    )
    assert result.success

    folder = tmp_path / readme_export_dir(tenant, day)
    frame = pd.read_parquet(folder / "activities.parquet")
    assert list(frame["activity_id"]) == [f"{tenant}-a1", f"{tenant}-a3", f"{tenant}-a2"]
    assert set(frame["tenant_id"]) == {tenant}
    assert list(frame["category"]) == ["conversation", "conversation", "assignment"]
    assert frame["occurred_at"].iloc[0] == pd.Timestamp(at(day, 0))
    assert frame["occurred_at"].iloc[2] == pd.Timestamp(at(day, 23, 59, 59, 999999))
    as_csv = pd.read_csv(folder / "activities.csv")
    assert list(as_csv["activity_id"]) == list(frame["activity_id"])
    theirs = pd.read_parquet(tmp_path / readme_export_dir(other, day) / "activities.parquet")
    assert list(theirs["activity_id"]) == [f"{other}-a1"]
    assert '"note":"zoë' in theirs["details"].iloc[0].replace(": ", ":")
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []

    (materialization,) = result.asset_materializations_for_node("activity_export")
    assert materialization.partition == day.isoformat()
    assert materialization.metadata["rows"].value == 4
    files = materialization.metadata["files"].value[day.isoformat()]
    assert files[tenant]["rows"] == 3
    assert files[tenant]["parquet"] == str(folder / "activities.parquet")


def test_export_backfill_range_in_one_run(db_url, activity_tables, tenant, tmp_path, resources):
    first = datetime.now(UTC).date() - timedelta(days=4)
    days = [first + timedelta(days=n) for n in range(3)]
    store(db_url, [make_event(tenant, n, when=at(d, 10)) for n, d in enumerate(days)])
    result = dg.materialize(
        [activities.activity_export],
        resources={
            "warehouse": resources["warehouse"],
            "export_storage": ExportStorage(export_url=str(tmp_path)),
        },
        tags={
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        },
    )
    assert result.success
    for n, day in enumerate(days):
        frame = pd.read_parquet(tmp_path / readme_export_dir(tenant, day) / "activities.parquet")
        assert list(frame["activity_id"]) == [f"{tenant}-a{n}"]
    assert activities.activity_export.backfill_policy.max_partitions_per_run == 7


def test_export_schedule_materializes_yesterday(activity_defs):
    schedule = activity_defs.resolve_schedule_def(activities.activity_export_schedule.name)
    tick_time = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    context = dg.build_schedule_context(scheduled_execution_time=tick_time)
    (run_request,) = schedule.evaluate_tick(context).run_requests
    assert run_request.partition_key == "2026-11-23"


def partition_tables(conn) -> set[str]:
    """raw.activities' partitions by table name, read from the catalog (not through the code
    under test)."""
    rows = conn.execute(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
        "where i.inhparent = 'raw.activities'::regclass"
    ).fetchall()
    return {name for (name,) in rows}


def as_of(op: str, day: date) -> dict:
    """Run config pinning the job's "today", so a test near midnight cannot disagree with it."""
    return {"ops": {op: {"config": {"today": day.isoformat()}}}}


def test_retention_drops_exactly_the_old_partitions(
    db_url, activity_defs, instance, resources, activity_tables, tenant
):
    db = activity_tables
    today = datetime.now(UTC).date()
    old = [today - timedelta(days=n) for n in (120, 91)]
    kept = [today - timedelta(days=n) for n in (90, 89)]
    with psycopg.connect(db_url) as conn:
        ensure_partitions(conn, old + kept)
        for n, day in enumerate(old + kept):
            conn.execute(
                "insert into raw.activities (activity_id, occurred_at, tenant_id, ticket_id, "
                "actor_type, actor_id, action, category) "
                "values (%s, %s, %s, 1, 'user', 'a', 'reply', 'conversation')",
                (f"{tenant}-r{n}", at(day, 12), tenant),
            )
            conn.execute(
                "insert into raw.activity_ids (activity_id, occurred_at) values (%s, %s)",
                (f"{tenant}-r{n}", at(day, 12)),
            )
    before = partition_tables(db)
    assert {table_of(d) for d in old + kept} <= before
    retention = as_of("drop_expired_activity_partitions", today)
    # retention is configurable: with 100 days only the 120-day-old partition goes
    longer = dg.Definitions(
        jobs=[activities.activity_retention_job],
        resources={**resources, "activity_settings": ActivitySettings(retention_days=100)},
    )
    assert longer.resolve_job_def("activity_retention").execute_in_process(
        instance=instance, run_config=retention
    ).output_for_node("drop_expired_activity_partitions") == [old[0].isoformat()]
    # the default 90 days: the 91-day-old one goes, the 90-day-old one is the oldest kept
    result = activity_defs.resolve_job_def("activity_retention").execute_in_process(
        instance=instance, run_config=retention
    )
    assert result.success
    assert result.output_for_node("drop_expired_activity_partitions") == [old[1].isoformat()]
    assert partition_tables(db) == before - {table_of(d) for d in old}
    ids = db.execute(
        "select activity_id from raw.activities where tenant_id = %s order by activity_id",
        (tenant,),
    ).fetchall()
    assert ids == [(f"{tenant}-r2",), (f"{tenant}-r3",)]
    ledger = db.execute(
        "select count(*) from raw.activity_ids where activity_id like %s", (f"{tenant}-r%",)
    ).fetchone()[0]
    assert ledger == 2


def test_maintenance_creates_partitions_ahead(db_url, activity_defs, instance, activity_tables):
    today = datetime.now(UTC).date()
    ahead = today + timedelta(days=3)
    activity_tables.execute(f"drop table if exists raw.{table_of(ahead)}")
    result = activity_defs.resolve_job_def("activity_partition_maintenance").execute_in_process(
        instance=instance, run_config=as_of("ensure_activity_partitions", today)
    )
    assert result.success
    window = [today + timedelta(days=n) for n in range(4)]
    assert result.output_for_node("ensure_activity_partitions") == [d.isoformat() for d in window]
    assert {table_of(d) for d in window} <= partition_tables(activity_tables)
    with psycopg.connect(db_url) as conn:
        assert set(window) <= set(partition_days(conn))


def test_deletes_remove_a_tickets_activities_everywhere(
    db_url, activity_defs, instance, resources, activity_tables, tenant
):
    db = activity_tables
    now = datetime.now(UTC)
    other = tenant + "-other"
    bodies = [
        make_event(tenant, n, when=(now - timedelta(days=d)).isoformat(), ticket_id=7)
        for n, d in enumerate((0, 5, 20, 60))
    ]
    bodies += [
        make_event(tenant, 10, ticket_id=8),
        make_event(other, 11, ticket_id=7),
    ]
    store(db_url, bodies)
    queues = resources["queues"]
    delete = {"type": "activity_delete", "tenant_id": tenant, "ticket_id": 7}
    queues.send("activity_deletes", [delete, dict(delete), {"tenant_id": tenant}])
    sensor = activity_defs.resolve_sensor_def("activity_deletes_queue_sensor")
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        (run_request,) = sensor.evaluate_tick(context).run_requests
    run = activity_defs.resolve_job_def("activity_deletes_drain").execute_in_process(
        instance=instance, tags=run_request.tags
    )
    assert run.success
    left = db.execute(
        "select tenant_id, ticket_id from raw.activities where tenant_id in (%s, %s) "
        "order by tenant_id",
        (tenant, other),
    ).fetchall()
    assert left == [(tenant, 8), (other, 7)]
    (dead,) = queues.dead_letters("activity_deletes")
    assert "ticket_id: missing" in dead.error
    (materialization,) = [
        e.event_specific_data.materialization
        for e in run.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    assert materialization.metadata["deleted_rows"].value == 4

    # a late activity of the destroyed ticket is not stored; a repeated delete changes nothing
    assert store(db_url, [make_event(tenant, 30, ticket_id=7)]) == 0
    queues.send("activity_deletes", [delete])
    assert (
        activity_defs.resolve_job_def("activity_deletes_drain")
        .execute_in_process(instance=instance)
        .success
    )
    assert db.execute(
        "select count(*) from raw.activities where tenant_id = %s", (tenant,)
    ).fetchone() == (1,)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"tenant_id": "acme"}, "ticket_id: missing"),
        ({"ticket_id": 1}, "tenant_id: missing"),
        ({"tenant_id": "acme", "ticket_id": 0}, "ticket_id: expected a positive"),
        ({"tenant_id": "a/b", "ticket_id": 1}, "tenant_id: not a valid"),
        ({"type": "purge", "tenant_id": "acme", "ticket_id": 1}, "type: expected"),
        ({"tenant_id": "acme", "ticket_id": 1, "all": True}, "all: unknown field"),
    ],
)
def test_invalid_delete_messages(body, problem):
    with pytest.raises(InvalidActivity, match=problem):
        parse_ticket_delete(body)


def test_timeline_and_cli(db_url, activity_tables, tenant, capsys):
    now = datetime.now(UTC).replace(microsecond=0)
    bodies = [
        make_event(tenant, 3, ticket_id=42, when=(now - timedelta(hours=1)).isoformat()),
        make_event(
            tenant,
            1,
            ticket_id=42,
            when=(now - timedelta(days=2)).isoformat(),
            action="ticket_created",
            changes=None,
        ),
        make_event(
            tenant,
            2,
            ticket_id=42,
            when=(now - timedelta(days=1)).isoformat(),
            actor_type="system",
            actor_id="supervisor-3",
            action="escalated",
            rule={"type": "supervisor", "name": "SLA breach"},
            changes=None,
        ),
        make_event(tenant, 4, ticket_id=43),
    ]
    store(db_url, bodies)
    with psycopg.connect(db_url) as conn:
        timeline = ticket_timeline(conn, tenant, 42)
    assert [e.activity_id for e in timeline] == [f"{tenant}-a{n}" for n in (1, 2, 3)]
    assert [e.actor_type for e in timeline] == ["user", "system", "user"]
    assert timeline[1].details == {"rule": {"type": "supervisor", "name": "SLA breach"}}

    assert cli_main(["activities", tenant, "42"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"ticket 42 of tenant {tenant}: 3 activities"
    assert "ticket_created [lifecycle]" in lines[1]
    assert "system:supervisor-3" in lines[2] and "SLA breach" in lines[2]
    assert "status_changed [status]" in lines[3]

    assert cli_main(["activities", tenant, "forty-two"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TICKET_ID: expected a positive integer" in err
    assert cli_main(["activities", "no/such", "1"]) == 2
    assert "TENANT: not a valid tenant id" in capsys.readouterr().err

"""A day's export always equals the table: late activities and ticket deletes for a day already
exported make the sensor request exactly that day again, and files of a tenant left with no
user activities that day are removed."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest

from assets.activities.rules import parse_activity
from assets.activities.store import (
    TicketDelete,
    delete_ticket_activities,
    insert_activities,
)
from resources.storage import ExportStorage
from tests.activities.helpers import activity_definitions, make_event


def at(day: date, hour: int) -> str:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC).isoformat()


def store(db_url: str, bodies: list[dict]) -> None:
    with psycopg.connect(db_url) as conn:
        insert_activities(conn, [parse_activity(b) for b in bodies])


def exported_ids(root: Path, tenant: str, day: date) -> list[str] | None:
    folder = root / f"activities/tenant={tenant}/date={day.isoformat()}"
    if not (folder / "activities.parquet").exists():
        assert not (folder / "activities.csv").exists()
        return None
    from_csv = list(pd.read_csv(folder / "activities.csv")["activity_id"])
    from_parquet = list(pd.read_parquet(folder / "activities.parquet")["activity_id"])
    assert from_csv == from_parquet
    return from_parquet


@pytest.fixture
def export_defs(resources, settings, tmp_path):
    return activity_definitions(
        {**resources, "export_storage": ExportStorage(export_url=str(tmp_path))}, settings
    )


def tick(defs, instance, resources) -> list[dg.RunRequest]:
    sensor = defs.resolve_sensor_def("activity_export_changes_sensor")
    with dg.build_sensor_context(
        instance=instance, resources=resources, definitions=defs
    ) as context:
        result = sensor.evaluate_tick(context)
    return list(result.run_requests or [])


def run(defs, instance, request: dg.RunRequest) -> None:
    job = defs.resolve_job_def("activity_export_daily")
    outcome = job.execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags
    )
    assert outcome.success


def test_late_events_and_deletes_reexport_exactly_the_changed_day(
    db_url, activity_tables, tenant, tmp_path, resources, export_defs, instance
):
    other = tenant + "-b"
    day = datetime.now(UTC).date() - timedelta(days=2)
    next_day = day + timedelta(days=1)
    store(
        db_url,
        [
            make_event(tenant, 1, when=at(day, 9), ticket_id=500),
            make_event(other, 1, when=at(day, 10), ticket_id=600),
            make_event(tenant, 2, when=at(next_day, 9), ticket_id=500),
        ],
    )
    assert tick(export_defs, instance, resources) == []  # nothing exported yet: nothing to redo
    for exported in (day, next_day):
        run(export_defs, instance, dg.RunRequest(partition_key=exported.isoformat()))
    assert exported_ids(tmp_path, tenant, day) == [f"{tenant}-a1"]
    assert exported_ids(tmp_path, other, day) == [f"{other}-a1"]
    assert tick(export_defs, instance, resources) == []

    # a late user activity for `day`, and a late system activity (not exported) for `next_day`
    store(
        db_url,
        [
            make_event(tenant, 3, when=at(day, 8), ticket_id=500),
            make_event(tenant, 4, when=at(next_day, 8), actor_type="system", actor_id="rule-9"),
        ],
    )
    (request,) = tick(export_defs, instance, resources)
    assert request.partition_key == day.isoformat()
    run(export_defs, instance, request)
    assert exported_ids(tmp_path, tenant, day) == [f"{tenant}-a3", f"{tenant}-a1"]
    assert tick(export_defs, instance, resources) == []

    # the other tenant's only ticket of that day is destroyed: its files go
    with psycopg.connect(db_url) as conn:
        assert delete_ticket_activities(conn, [TicketDelete(other, 600)]) == 1
    (request,) = tick(export_defs, instance, resources)
    assert request.partition_key == day.isoformat()
    run(export_defs, instance, request)
    assert exported_ids(tmp_path, other, day) is None
    assert not (tmp_path / f"activities/tenant={other}/date={day.isoformat()}").exists()
    assert exported_ids(tmp_path, tenant, day) == [f"{tenant}-a3", f"{tenant}-a1"]
    assert exported_ids(tmp_path, tenant, next_day) == [f"{tenant}-a2"]
    assert tick(export_defs, instance, resources) == []


def test_each_change_is_requested_once_and_a_later_change_again(
    db_url, activity_tables, tenant, resources, export_defs, instance
):
    day = datetime.now(UTC).date() - timedelta(days=3)
    store(db_url, [make_event(tenant, 1, when=at(day, 9))])
    run(export_defs, instance, dg.RunRequest(partition_key=day.isoformat()))
    store(db_url, [make_event(tenant, 2, when=at(day, 10))])
    first = tick(export_defs, instance, resources)
    again = tick(export_defs, instance, resources)
    assert [r.run_key for r in first] == [r.run_key for r in again]  # same change, same key
    store(db_url, [make_event(tenant, 3, when=at(day, 11))])
    later = tick(export_defs, instance, resources)
    assert later[0].partition_key == day.isoformat() and later[0].run_key != first[0].run_key

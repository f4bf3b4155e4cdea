"""README promises of the activities domain that had no test: `supportflow activities --json`
prints the timeline as one JSON object a line, and the daily export writes no files for a tenant
whose day holds only system activities (the export is of user activities)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg

from assets.activities import defs as activities
from assets.activities.rules import parse_activity
from assets.activities.store import insert_activities
from orchestration.cli import main as cli_main
from resources.storage import ExportStorage
from tests.activities.helpers import make_event


def store(db_url: str, bodies: list[dict]) -> None:
    with psycopg.connect(db_url) as conn:
        insert_activities(conn, [parse_activity(b) for b in bodies])


def test_activities_json_prints_the_timeline_one_object_a_line(
    db_url, activity_tables, tenant, capsys
):
    created = (datetime.now(UTC) - timedelta(days=3)).replace(hour=9, minute=0, second=0)
    created = created.replace(microsecond=0)
    store(
        db_url,
        [
            make_event(
                tenant, 2, ticket_id=42, when=(created + timedelta(hours=2)).isoformat()
            ),  # status_changed by agent-2
            make_event(
                tenant,
                1,
                ticket_id=42,
                when=created.isoformat(),
                action="ticket_created",
                changes=None,
            ),
            make_event(
                tenant,
                3,
                ticket_id=42,
                when=(created + timedelta(hours=5)).isoformat(),
                actor_type="system",
                actor_id="sla-1",
                action="escalated",
                rule={"type": "sla", "name": "first reply"},
                changes=None,
            ),
            make_event(tenant, 4, ticket_id=43),  # another ticket: not printed
        ],
    )
    assert cli_main(["activities", tenant, "42", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["activity_id"] for r in records] == [f"{tenant}-a1", f"{tenant}-a2", f"{tenant}-a3"]
    assert [datetime.fromisoformat(r["occurred_at"]) for r in records] == [
        created,
        created + timedelta(hours=2),
        created + timedelta(hours=5),
    ]
    assert [(r["actor_type"], r["actor_id"]) for r in records] == [
        ("user", "agent-1"),
        ("user", "agent-2"),
        ("system", "sla-1"),
    ]
    assert [r["action"] for r in records] == ["ticket_created", "status_changed", "escalated"]
    # the README's categories: a creation is lifecycle, a status change status, system: none
    assert [r["category"] for r in records] == ["lifecycle", "status", None]
    assert records[1]["details"] == {"changes": {"status": ["open", "pending"]}}
    assert records[2]["details"] == {"rule": {"type": "sla", "name": "first reply"}}


def test_no_export_files_for_a_tenant_with_only_system_activities(
    db_url, activity_tables, tenant, tmp_path, resources
):
    machines_only = tenant + "-system"
    day = datetime.now(UTC).date() - timedelta(days=1)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    store(
        db_url,
        [
            make_event(tenant, 1, when=noon.isoformat(), action="reply"),
            make_event(
                machines_only,
                1,
                when=noon.isoformat(),
                actor_type="system",
                actor_id="trigger-7",
                action="status_changed",
            ),
            make_event(
                machines_only,
                2,
                when=(noon + timedelta(hours=1)).isoformat(),
                actor_type="system",
                actor_id="automation-2",
                action="email_delivery_failed",
                changes=None,
            ),
        ],
    )
    result = dg.materialize(
        [activities.activity_export],
        partition_key=day.isoformat(),
        resources={
            "warehouse": resources["warehouse"],
            "export_storage": ExportStorage(export_url=str(tmp_path)),
        },
    )
    assert result.success
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        f"activities/tenant={tenant}/date={day.isoformat()}/activities.csv",
        f"activities/tenant={tenant}/date={day.isoformat()}/activities.parquet",
    ]
    (materialization,) = result.asset_materializations_for_node("activity_export")
    assert materialization.metadata["rows"].value == 1
    assert machines_only not in materialization.metadata["files"].value[day.isoformat()]

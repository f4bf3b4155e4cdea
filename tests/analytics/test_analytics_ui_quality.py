"""What an operator sees in the Dagster UI, checked for every domain: assets in their domain's
group with a description, owners and kinds; partitioned assets backfillable; jobs, schedules and
sensors named and described, on by default."""

from __future__ import annotations

import dagster as dg
import pytest

DOMAIN_GROUPS = {
    "tickets",
    "activities",
    "email_delivery",
    "feedback",
    "conversations",
    "analytics",
}


@pytest.fixture(scope="module")
def defs():
    from orchestration.definitions import defs

    return defs


@pytest.fixture(scope="module")
def asset_nodes(defs):
    graph = defs.resolve_asset_graph()
    return {key: graph.get(key) for key in graph.get_all_asset_keys()}


def test_every_asset_is_in_a_domain_group_described_owned_and_kinded(asset_nodes):
    problems = []
    for key, node in asset_nodes.items():
        name = key.to_user_string()
        if node.group_name not in DOMAIN_GROUPS:
            problems.append(f"{name}: group {node.group_name!r}")
        if not (node.description or "").strip():
            problems.append(f"{name}: no description")
        if not node.owners:
            problems.append(f"{name}: no owners")
        if not node.kinds:
            problems.append(f"{name}: no kinds")
    assert problems == []


def test_every_table_asset_shows_its_columns(asset_nodes):
    missing = [
        key.to_user_string()
        for key, node in asset_nodes.items()
        if node.is_materializable
        and "postgres" in node.kinds
        and "dagster/column_schema" not in (node.metadata or {})
        and key.path[0] != "staging"  # dbt staging views mirror the raw tables' columns
    ]
    assert missing == []


def test_every_column_shown_has_a_type_and_a_description(asset_nodes):
    """The UI's column table is the analysts' data dictionary: no blank type or meaning."""
    incomplete = []
    for key, node in asset_nodes.items():
        schema = (node.metadata or {}).get("dagster/column_schema")
        if schema is None:
            continue
        # a TableSchema as declared, or the metadata value dagster-dbt builds from schema.yml
        columns = schema.schema.columns if hasattr(schema, "schema") else schema.columns
        for column in columns:
            if not (column.type or "").strip() or column.type == "?":
                incomplete.append(f"{key.to_user_string()}.{column.name}: no type")
            if not (column.description or "").strip():
                incomplete.append(f"{key.to_user_string()}.{column.name}: no description")
    assert incomplete == []


def test_the_raw_tables_feed_the_marts(asset_nodes):
    raw = {
        "zendesk_tickets",
        "zendesk_users",
        "zendesk_ticket_comments",
        "activities",
        "notifications",
        "delivery_events",
        "feedback_items",
        "conversation_messages",
        "conversation_tickets",
    }
    for name in raw:
        node = asset_nodes[dg.AssetKey(name)]
        assert node.is_materializable, f"{name} is not produced by a domain asset"
        assert any(child.path[0] == "staging" for child in node.child_keys), name


def test_time_partitioned_assets_are_filled_by_a_schedule(defs, asset_nodes):
    """Backfills are for the past; a schedule keeps the new partitions coming."""
    scheduled = set()
    for schedule in defs.schedules or []:
        job = defs.resolve_job_def(defs.resolve_schedule_def(schedule.name).job_name)
        scheduled |= set(job.asset_layer.selected_asset_keys)
    for key, node in asset_nodes.items():
        if isinstance(node.partitions_def, dg.TimeWindowPartitionsDefinition):
            assert key in scheduled, f"{key.to_user_string()} has no schedule"


def test_jobs_schedules_and_sensors_are_described(defs):
    problems = []
    for job in defs.resolve_all_job_defs():
        if not job.name.startswith("__") and not (job.description or "").strip():
            problems.append(f"job {job.name}: no description")
    for schedule in defs.schedules or []:
        schedule = defs.resolve_schedule_def(schedule.name)
        if not (schedule.description or "").strip():
            problems.append(f"schedule {schedule.name}: no description")
        if schedule.default_status != dg.DefaultScheduleStatus.RUNNING:
            problems.append(f"schedule {schedule.name}: off by default")
    for sensor in defs.sensors or []:
        if not (sensor.description or "").strip():
            problems.append(f"sensor {sensor.name}: no description")
        if sensor.default_status != dg.DefaultSensorStatus.RUNNING:
            problems.append(f"sensor {sensor.name}: off by default")
    assert problems == []


def test_every_daily_partition_set_starts_on_the_one_configured_day(asset_nodes):
    """SUPPORTFLOW_PARTITIONS_START (the tests set 2024-01-01) is the first day of every set."""
    starts = {
        key.to_user_string(): node.partitions_def.start.date().isoformat()
        for key, node in asset_nodes.items()
        if isinstance(node.partitions_def, dg.TimeWindowPartitionsDefinition)
    }
    assert len(starts) >= 4  # activity export, template stats, insight reports, conversations
    assert set(starts.values()) == {"2024-01-01"}, starts


def test_every_scheduled_asset_promises_a_freshness_its_schedule_keeps(defs, asset_nodes):
    """The health view turns an asset stale when its schedule stopped: a freshness policy on
    every asset a schedule materializes, warning only after a whole period without a run."""
    import datetime as dt

    from dagster._utils.schedules import cron_string_iterator

    problems = []
    for schedule in defs.schedules or []:
        schedule = defs.resolve_schedule_def(schedule.name)
        job = defs.resolve_job_def(schedule.job_name)
        if job.asset_layer is None or not job.asset_layer.selected_asset_keys:
            continue  # an op job (maintenance, closure sweep)
        ticks = cron_string_iterator(
            dt.datetime(2026, 11, 2, tzinfo=dt.UTC).timestamp(),
            schedule.cron_schedule,
            schedule.execution_timezone or "UTC",
        )
        first, second = next(ticks), next(ticks)
        period = second - first
        for key in job.asset_layer.selected_asset_keys:
            policy = asset_nodes[key].freshness_policy
            if policy is None:
                problems.append(f"{key.to_user_string()}: no freshness policy ({schedule.name})")
            elif policy.warn_window.to_timedelta() <= period:
                problems.append(f"{key.to_user_string()}: warns within one {schedule.name} period")
    assert problems == []

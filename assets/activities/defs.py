"""Ticket activities in Dagster: the `activities` asset (queue -> raw.activities, materialized by a
drain run the queue sensor launches), the `activity_export` daily files, the ticket-delete drain,
partition maintenance and retention, with their jobs and schedules.

The rules live in plain modules: `assets/activities/rules.py` (event format, categories,
idempotent insert), `assets/activities/store.py` (partitions, retention, deletes, timeline, batch
appliers) and `assets/activities/export.py` (streaming export).
"""

from datetime import date

import dagster as dg
from pydantic import Field

from assets.activities.export import EXPORT_SCHEMA, export_day
from assets.activities.store import (
    DEFAULT_DAYS_AHEAD,
    DEFAULT_RETENTION_DAYS,
    IngestTally,
    activity_batch_applier,
    delete_batch_applier,
    drop_expired_partitions,
    ensure_partitions_ahead,
    utc_today,
)
from resources.alerts import AlertsResource
from resources.columns import table_schema
from resources.partitions import DAILY_FRESHNESS, daily_partitions, window_days
from resources.queues import QueueResource, drain
from resources.settings import Settings
from resources.storage import ExportStorage
from resources.warehouse import WarehouseResource

OWNERS = ["team:data-eng"]
ACTIVITIES_DRAIN_JOB = "activities_drain"
ACTIVITY_DELETES_DRAIN_JOB = "activity_deletes_drain"


class ActivitySettings(dg.ConfigurableResource):
    """How long activities are kept and how many days of partitions exist ahead of today."""

    retention_days: int = DEFAULT_RETENTION_DAYS
    days_ahead: int = DEFAULT_DAYS_AHEAD


class AsOfConfig(dg.Config):
    """The UTC day partition maintenance and retention act as of."""

    today: str | None = Field(
        default=None,
        description="Act as of this UTC day (YYYY-MM-DD), e.g. to re-run a missed night; "
        "default: today.",
    )

    def day(self) -> date:
        return date.fromisoformat(self.today) if self.today else utc_today()


class DrainConfig(dg.Config):
    batch_size: int = 1000
    max_seconds: float = 600.0
    visibility_timeout: float = 300.0
    retry_base_seconds: float = 10.0


ACTIVITIES_COLUMNS = table_schema(
    ("activity_id", "text", "idempotency id from the producer"),
    ("occurred_at", "timestamptz", "when the action happened; partition key (UTC day)"),
    ("tenant_id", "text", "the tenant the ticket belongs to"),
    ("ticket_id", "bigint", "the ticket acted on"),
    ("actor_type", "text", "user (an agent) | system (an automation rule)"),
    ("actor_id", "text", "the agent's or the rule's id"),
    ("action", "text", "what was done (status_changed, replied, rule_applied ...)"),
    ("category", "text", "dashboard category, user activities"),
    ("details", "jsonb", "changes, rule and extra fields"),
    ("received_at", "timestamptz", "when the platform stored it"),
)
# What each column of the daily export files holds (a column missing here fails at import).
EXPORT_COLUMN_ABOUT = {
    "tenant_id": "the tenant (also the file's tenant=<t> folder)",
    "activity_id": "idempotency id from the producer",
    "ticket_id": "the ticket acted on",
    "actor_id": "the agent's id (exports hold user activities only)",
    "action": "what was done",
    "category": "dashboard category",
    "occurred_at": "when it happened (UTC, microseconds); the file's date=<day>",
    "details": "changes and extra fields as JSON text",
}


def _alert_fn(alerts: AlertsResource):
    return lambda source, summary, details: alerts.raise_alert(source, summary, details)


@dg.asset(
    name="activities",
    group_name="activities",
    kinds={"postgres"},
    owners=OWNERS,
    description=(
        "raw.activities: ticket activities (user and system) drained from queue `activities`, "
        "one partition per UTC day, idempotent on activity_id."
    ),
    metadata={"dagster/column_schema": ACTIVITIES_COLUMNS, "dagster/table_name": "raw.activities"},
)
def activities(
    context: dg.AssetExecutionContext,
    config: DrainConfig,
    warehouse: WarehouseResource,
    queues: QueueResource,
    alerts: AlertsResource,
    activity_settings: ActivitySettings,
) -> dg.MaterializeResult:
    tally = IngestTally()
    report = drain(
        queues,
        "activities",
        activity_batch_applier(
            warehouse.connection,
            tally,
            today=utc_today(),
            retention_days=activity_settings.retention_days,
        ),
        raise_alert=_alert_fn(alerts),
        batch_size=config.batch_size,
        visibility_timeout=config.visibility_timeout,
        retry_base_seconds=config.retry_base_seconds,
        max_seconds=config.max_seconds,
    )
    context.log.info("drained activities: %s, inserted %d", report, tally.inserted)
    return dg.MaterializeResult(
        metadata={
            **report.as_metadata(),
            "inserted": tally.inserted,
            "already_stored": tally.already_stored,
        }
    )


@dg.op(description="Drain queue activity_deletes: remove destroyed tickets' activities.")
def drain_activity_deletes(
    context: dg.OpExecutionContext,
    config: DrainConfig,
    warehouse: WarehouseResource,
    queues: QueueResource,
    alerts: AlertsResource,
) -> None:
    tally = IngestTally()
    report = drain(
        queues,
        "activity_deletes",
        delete_batch_applier(warehouse.connection, tally),
        raise_alert=_alert_fn(alerts),
        batch_size=config.batch_size,
        visibility_timeout=config.visibility_timeout,
        retry_base_seconds=config.retry_base_seconds,
        max_seconds=config.max_seconds,
        # A delete message has no id of its own (its dedup id is a hash of its body), and a
        # delete is idempotent anyway: apply repeats rather than skip them, so a later identical
        # delete still removes activities that arrived in between.
        skip_previously_acked=False,
    )
    context.log.info("drained activity deletes: %s, deleted %d rows", report, tally.deleted)
    if report.applied:
        context.log_event(
            dg.AssetMaterialization(
                asset_key="activities",
                description="activities of destroyed tickets removed",
                metadata={**report.as_metadata(), "deleted_rows": tally.deleted},
            )
        )


@dg.job(name=ACTIVITY_DELETES_DRAIN_JOB, description="Apply queued ticket deletes to activities.")
def activity_deletes_drain_job() -> None:
    drain_activity_deletes()


activities_drain_job = dg.define_asset_job(
    ACTIVITIES_DRAIN_JOB,
    selection=[activities],
    description="Drain queue activities into raw.activities (launched by the queue sensor).",
)


# --- partitions: ahead of time, and retention ------------------------------------------------


@dg.op(description="Create today's and the next days' partitions of raw.activities.")
def ensure_activity_partitions(
    context: dg.OpExecutionContext,
    config: AsOfConfig,
    warehouse: WarehouseResource,
    activity_settings: ActivitySettings,
) -> list[str]:
    with warehouse.connection() as conn:
        days = ensure_partitions_ahead(conn, config.day(), activity_settings.days_ahead)
    context.log.info("partitions present for %s", ", ".join(map(str, days)))
    return [str(day) for day in days]


@dg.op(description="Drop raw.activities partitions older than the retention period.")
def drop_expired_activity_partitions(
    context: dg.OpExecutionContext,
    config: AsOfConfig,
    warehouse: WarehouseResource,
    activity_settings: ActivitySettings,
) -> list[str]:
    with warehouse.connection() as conn:
        dropped = drop_expired_partitions(conn, config.day(), activity_settings.retention_days)
    context.log.info("dropped %d partition(s): %s", len(dropped), ", ".join(map(str, dropped)))
    return [str(day) for day in dropped]


@dg.job(name="activity_partition_maintenance", description="Keep day partitions created ahead.")
def activity_partition_maintenance_job() -> None:
    ensure_activity_partitions()


@dg.job(name="activity_retention", description="Drop activity partitions past retention.")
def activity_retention_job() -> None:
    drop_expired_activity_partitions()


# Hourly although the partitions exist days ahead: cheap, and a missed tick heals within the hour.
activity_partition_maintenance_schedule = dg.ScheduleDefinition(
    name="activity_partition_maintenance_hourly",
    job=activity_partition_maintenance_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    description="Create the coming days' partitions of raw.activities, every hour.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
activity_retention_schedule = dg.ScheduleDefinition(
    name="activity_retention_daily",
    job=activity_retention_job,
    cron_schedule="30 3 * * *",
    execution_timezone="UTC",
    description="Drop raw.activities partitions past the retention period, nightly.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


# --- the daily export --------------------------------------------------------------------------

# From SUPPORTFLOW_PARTITIONS_START, fixed per deployment so partition keys (and their history in
# the UI) stay stable. The retention period keeps 90 days; older keys just export nothing.
activity_export_partitions = daily_partitions()


@dg.asset(
    name="activity_export",
    group_name="activities",
    kinds={"python", "parquet", "csv"},
    owners=OWNERS,
    deps=[activities],
    partitions_def=activity_export_partitions,
    freshness_policy=DAILY_FRESHNESS,
    # A day's export is one sort of one partition: cheap per day, so a 30-day backfill packs
    # seven days into each run (5 runs, not 30 run processes on a small machine), while a failure
    # repeats at most a week and several runs can proceed side by side.
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=7),
    metadata={
        "dagster/column_schema": table_schema(
            *(
                (field.name, str(field.type), EXPORT_COLUMN_ABOUT[field.name])
                for field in EXPORT_SCHEMA
            )
        )
    },
    description=(
        "Daily dashboard (user) activities of every tenant as Parquet and CSV at "
        "activities/tenant=<t>/date=<YYYY-MM-DD>/ of the export storage."
    ),
)
def activity_export(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    export_storage: ExportStorage,
) -> dg.MaterializeResult:
    per_day: dict[str, dict] = {}
    total = 0
    for day in window_days(context):
        with warehouse.connection() as conn:
            exports = export_day(conn, export_storage, day)
        rows = sum(e.rows for e in exports)
        total += rows
        per_day[day.isoformat()] = {
            e.tenant_id: {"rows": e.rows, "parquet": e.parquet_uri, "csv": e.csv_uri}
            for e in exports
        }
        context.log.info("exported %s: %d rows for %d tenant(s)", day, rows, len(exports))
    return dg.MaterializeResult(
        metadata={
            "rows": total,
            "tenants": len({t for files in per_day.values() for t in files}),
            "files": dg.MetadataValue.json(per_day),
            "location": export_storage.uri("activities"),
        }
    )


activity_export_job = dg.define_asset_job(
    "activity_export_daily",
    selection=[activity_export],
    description="Write one day's activity export files (Parquet and CSV) per tenant.",
)
# 01:00 UTC, for yesterday: an hour for yesterday's late events to arrive first.
activity_export_schedule = dg.build_schedule_from_partitioned_job(
    activity_export_job,
    name="activity_export_daily_schedule",
    description="Export yesterday's activities at 01:00 UTC.",
    hour_of_day=1,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


@dg.asset_check(
    asset=activities,
    name="activity_days_within_partitions",
    description=(
        "No activity is on a day before the daily partitions start "
        "(SUPPORTFLOW_PARTITIONS_START): such a day could never be exported."
    ),
)
def activity_days_within_partitions(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    start = activity_export_partitions.start
    with warehouse.connection() as conn:
        days = conn.execute(
            "select (occurred_at at time zone 'UTC')::date as day, count(*) from raw.activities"
            " where occurred_at < %s group by 1 order by 1",
            (start,),
        ).fetchall()
    return dg.AssetCheckResult(
        passed=not days,
        metadata={
            "partitions_start": start.date().isoformat(),
            "days_before_start": len(days),
            "activities_before_start": sum(count for _, count in days),
            "first_days": dg.MetadataValue.json([day.isoformat() for day, _ in days[:10]]),
        },
    )


EXPORT_LAG_MINUTES = 10


@dg.asset_check(
    asset=activity_export,
    name="exports_match_their_day",
    description=(
        "Every exported day's files still equal its rows: no late activity or ticket delete "
        f"has waited more than {EXPORT_LAG_MINUTES} minutes for the day's re-export."
    ),
)
def exports_match_their_day(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connection() as conn:
        stale = conn.execute(
            "select day, changed_at from control.activity_export_days"
            " where exported_at is not null and changed_at > exported_at"
            " and changed_at < now() - make_interval(mins => %s) order by day",
            (EXPORT_LAG_MINUTES,),
        ).fetchall()
    return dg.AssetCheckResult(
        passed=not stale,
        metadata={
            "stale_days": len(stale),
            "first_stale_days": dg.MetadataValue.json([day.isoformat() for day, _ in stale[:10]]),
        },
    )


def build_defs(settings: Settings) -> dg.Definitions:
    """The activities definitions, with the retention period from the settings."""
    retention = (
        settings.for_dagster(
            "SUPPORTFLOW_ACTIVITY_RETENTION_DAYS", settings.activity_retention_days
        )
        if settings.activity_retention_days
        else DEFAULT_RETENTION_DAYS
    )
    return dg.Definitions(
        assets=[activities, activity_export],
        asset_checks=[activity_days_within_partitions, exports_match_their_day],
        jobs=[
            activities_drain_job,
            activity_deletes_drain_job,
            activity_partition_maintenance_job,
            activity_retention_job,
            activity_export_job,
        ],
        schedules=[
            activity_partition_maintenance_schedule,
            activity_retention_schedule,
            activity_export_schedule,
        ],
        resources={"activity_settings": ActivitySettings(retention_days=retention)},
    )

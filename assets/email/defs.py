"""Email delivery in Dagster: the `notifications` and `delivery_events` assets (queue drains),
the `email_events` router, `template_stats` (daily partitions in the configured time zone), the
retention job, their schedules and sensors.

Flow: queue `email_sent` -> `notifications` (raw.notifications, status `sending`); the webhook
service -> queue `email_events` -> router -> `email_events.<pod>` -> `delivery_events` (receipts:
raw.delivery_events, status changes, failure activities); raw.notifications -> `template_stats`
-> analytics.template_stats_daily. The rules are in `assets.email.rules`, the SQL in
`assets.email.store`; this module only wires them.

Settings (read once, by `resources/settings.py`): `SUPPORTFLOW_POD` (the pod whose receipts
queue this deployment drains), `SUPPORTFLOW_EMAIL_TIMEZONE` (days of template statistics and
retention, default UTC), `SUPPORTFLOW_EMAIL_INTERNAL_SENDERS` (comma-separated addresses or
`@domain`s whose receipts are ignored), `SUPPORTFLOW_EMAIL_DEFAULT_POD` (pod of tenants not in
control.email_tenant_pods, default `default`), `SUPPORTFLOW_EMAIL_RETENTION_DAYS` (default 7).
"""

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dagster as dg
import psycopg
from dagster._core.definitions.data_version import extract_data_version_from_entry

from assets.email.rules import (
    DEFAULT_RETENTION_DAYS,
    InvalidMessage,
    parse_receipt,
    parse_sent_notification,
    receipt_key,
)
from assets.email.store import (
    ReceiptResults,
    apply_receipts,
    pods_for_tenants,
    run_retention,
    store_sent_notifications,
    write_template_stats_day,
)
from resources.alerts import AlertsResource
from resources.columns import table_schema
from resources.frames import markdown_head, query_frame
from resources.partitions import DAILY_FRESHNESS, daily_partitions
from resources.queues import BatchOutcome, Message, QueueResource, drain
from resources.settings import Settings
from resources.warehouse import WarehouseResource

GROUP = "email_delivery"
OWNERS = ["team:notifications"]
EMAIL_SENT_JOB = "email_sent_drain"
EMAIL_EVENTS_ROUTER_JOB = "email_events_router"
EMAIL_RECEIPTS_JOB = "email_receipts_drain"
TEMPLATE_STATS_JOB = "template_stats_daily"
RETENTION_JOB = "notification_retention"


@dataclass(frozen=True)
class EmailDeliverySettings:
    pod: str = "default"
    default_pod: str = "default"
    timezone: str = "UTC"
    internal_senders: tuple[str, ...] = ()
    retention_days: int = DEFAULT_RETENTION_DAYS
    retry_base_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "EmailDeliverySettings":
        return cls(
            pod=settings.pod,
            default_pod=settings.email_default_pod,
            timezone=settings.email_timezone,
            internal_senders=settings.email_internal_senders,
            retention_days=settings.email_retention_days,
        )


class EmailDelivery(dg.ConfigurableResource):
    """Email delivery settings the runs need (resource key `email_delivery`)."""

    pod: str = "default"
    default_pod: str = "default"
    timezone: str = "UTC"
    internal_senders: list[str] = []
    retention_days: int = DEFAULT_RETENTION_DAYS
    # first retry delay of a failed message (doubles per receive, capped at 300 s)
    retry_base_seconds: float = 10.0

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def receipts_queue(self) -> str:
        return f"email_events.{self.pod}"


def _alert_fn(alerts: AlertsResource):
    return lambda source, summary, details: alerts.raise_alert(source, summary, details)


def _parse_all(messages: list[Message], parse) -> tuple[list, list[Message], dict[str, str]]:
    parsed, kept, rejected = [], [], {}
    for message in messages:
        try:
            parsed.append(parse(message.body))
            kept.append(message)
        except InvalidMessage as exc:
            rejected[message.receipt] = str(exc)
    return parsed, kept, rejected


# --- notifications (queue email_sent) ------------------------------------------------------------


@dg.asset(
    name="notifications",
    group_name=GROUP,
    owners=OWNERS,
    kinds={"postgres", "python"},
    description=(
        "raw.notifications: every outbound email the helpdesk sent (queue `email_sent`), with "
        "its current delivery status. Orphan receipts that arrived first are adopted here."
    ),
    metadata={
        "dagster/table_name": "raw.notifications",
        "dagster/column_schema": table_schema(
            ("notification_id", "text", "id from the helpdesk"),
            ("tenant_id", "text", "the helpdesk tenant that sent it"),
            ("ticket_id", "bigint", "the ticket the reply/forward belongs to"),
            ("template_id", "text", "the helpdesk's email template"),
            ("recipient", "text", "personal data: kept for the retention period only"),
            ("provider", "text", "mailgun | sendgrid | ses"),
            ("provider_reference", "text", "the provider's message id"),
            ("status", "text", "sending, pending, delivered, *-failure"),
            ("sent_at", "timestamptz", "when the helpdesk handed it to the provider"),
            ("status_updated_at", "timestamptz", "when the status last changed"),
        ),
    },
)
def notifications(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    queues: QueueResource,
    alerts: AlertsResource,
    email_delivery: EmailDelivery,
) -> dg.MaterializeResult:
    totals = {"inserted": 0, "adopted_receipts": 0}

    def apply_batch(messages: list[Message]) -> BatchOutcome:
        parsed, kept, rejected = _parse_all(messages, parse_sent_notification)
        with warehouse.connection() as conn:
            results = store_sent_notifications(conn, parsed)
        totals["inserted"] += results.inserted
        totals["adopted_receipts"] += results.adopted
        for index in results.conflicts:
            rejected[kept[index].receipt] = (
                "provider_reference already belongs to another notification_id"
            )
        return BatchOutcome(rejected=rejected)

    report = drain(
        queues,
        "email_sent",
        apply_batch,
        raise_alert=_alert_fn(alerts),
        retry_base_seconds=email_delivery.retry_base_seconds,
    )
    context.log.info("drained email_sent: %s %s", report, totals)
    changed = totals["inserted"] + totals["adopted_receipts"] > 0
    return dg.MaterializeResult(
        metadata={**report.as_metadata(), **totals},
        data_version=_drain_data_version(context, changed),
    )


def _drain_data_version(context: dg.AssetExecutionContext, changed: bool) -> dg.DataVersion:
    """A new data version when the drain changed the table, else the last one again: a drain
    that found only duplicates (a second `supportflow demo`, a re-delivery) leaves what reads
    the table in sync instead of "Unsynced (upstream data)" in the UI."""
    if not changed:
        record = context.instance.get_latest_data_version_record(context.asset_key)
        version = record and extract_data_version_from_entry(record.event_log_entry)
        if version:
            return version
    return dg.DataVersion(context.run_id)


# --- delivery receipts (queue email_events.<pod>) -------------------------------------------------


@dg.asset(
    name="delivery_events",
    group_name=GROUP,
    owners=OWNERS,
    kinds={"postgres", "python"},
    deps=["notifications"],
    description=(
        "raw.delivery_events: every provider event once (queue `email_events.<pod>`); applying "
        "a receipt moves its notification's status by the rules and writes a failure activity "
        "on the ticket timeline. Receipts whose notification never came are kept as orphans."
    ),
    metadata={
        "dagster/table_name": "raw.delivery_events",
        "dagster/column_schema": table_schema(
            ("provider", "text", "mailgun | sendgrid | ses"),
            ("provider_event_id", "text", "unique per provider"),
            ("provider_reference", "text", "the provider's message id"),
            ("notification_id", "text", "null while orphan"),
            ("event_type", "text", "the provider's event name"),
            ("outcome", "text", "delivered, *-failure, accepted, opened, clicked, complained"),
            (
                "severity",
                "text",
                "the provider's own severity value (Mailgun: temporary | permanent)",
            ),
            ("occurred_at", "timestamptz", "when the provider says it happened"),
            ("status_applied", "text", "the status this event set, if any"),
            ("orphan", "boolean", "no notification matched it yet (adopted when one arrives)"),
            ("payload", "jsonb", "the event as the provider sent it"),
        ),
    },
)
def delivery_events(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    queues: QueueResource,
    alerts: AlertsResource,
    email_delivery: EmailDelivery,
) -> dg.MaterializeResult:
    totals: dict[str, int] = defaultdict(int)

    def apply_batch(messages: list[Message]) -> BatchOutcome:
        receipts, kept, rejected = _parse_all(messages, parse_receipt)
        last = [m.receive_count >= queues.max_receives for m in kept]
        with warehouse.connection() as conn:
            results: ReceiptResults = apply_receipts(
                conn,
                receipts,
                last_attempt=last,
                internal_senders=email_delivery.internal_senders,
            )
        for name in (
            "applied",
            "status_changes",
            "duplicates",
            "ignored",
            "orphaned",
            "failure_activities",
        ):
            totals[name] += getattr(results, name)
        failed = {kept[i].receipt: "notification not found yet" for i in results.missing}
        totals["waiting_for_notification"] += len(failed)
        return BatchOutcome(rejected=rejected, failed=failed)

    report = drain(
        queues,
        email_delivery.receipts_queue,
        apply_batch,
        raise_alert=_alert_fn(alerts),
        retry_base_seconds=email_delivery.retry_base_seconds,
    )
    context.log.info("drained %s: %s %s", email_delivery.receipts_queue, report, dict(totals))
    return dg.MaterializeResult(metadata={**report.as_metadata(), **totals})


@dg.asset_check(
    asset="delivery_events",
    description=(
        "A status is set at most once: no notification has two receipts that set a final status "
        "(or two that set `pending`), and each final-status receipt agrees with the notification."
    ),
)
def status_set_at_most_once(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connection() as conn:
        twice = conn.execute(
            """
            select count(*) from (
                select notification_id from raw.delivery_events
                where status_applied is not null
                group by notification_id, status_applied = 'pending' having count(*) > 1
            ) t
            """
        ).fetchone()[0]
        disagreeing = conn.execute(
            """
            select count(*) from raw.delivery_events e
            join raw.notifications n using (notification_id)
            where e.status_applied is not null and e.status_applied <> 'pending'
              and e.status_applied <> n.status
            """
        ).fetchone()[0]
    return dg.AssetCheckResult(
        passed=twice == 0 and disagreeing == 0,
        metadata={"set_twice": twice, "disagreeing": disagreeing},
    )


# --- router (queue email_events -> email_events.<pod>) --------------------------------------------


@dg.op(description="Move events from the global email_events queue to email_events.<pod>.")
def route_email_events(
    context: dg.OpExecutionContext,
    warehouse: WarehouseResource,
    queues: QueueResource,
    alerts: AlertsResource,
    email_delivery: EmailDelivery,
) -> None:
    routed: dict[str, int] = defaultdict(int)

    def apply_batch(messages: list[Message]) -> BatchOutcome:
        receipts, kept, rejected = _parse_all(messages, parse_receipt)
        with warehouse.connection() as conn:
            pods = pods_for_tenants(
                conn, [r.tenant_id for r in receipts], email_delivery.default_pod
            )
        by_pod: dict[str, list[dict]] = defaultdict(list)
        for receipt, message in zip(receipts, kept, strict=True):
            by_pod[pods[receipt.tenant_id]].append(message.body)
        # Sent before the global messages are acknowledged: a crash in between re-sends, and the
        # duplicates are harmless (each provider event is stored once).
        for pod, bodies in by_pod.items():
            queues.send(f"email_events.{pod}", bodies, dedup_key=receipt_key)
            routed[pod] += len(bodies)
        return BatchOutcome(rejected=rejected)

    report = drain(
        queues,
        "email_events",
        apply_batch,
        raise_alert=_alert_fn(alerts),
        retry_base_seconds=email_delivery.retry_base_seconds,
    )
    context.log.info("routed email events: %s by pod %s", report, dict(routed))
    context.add_output_metadata(
        {**report.as_metadata(), **{f"pod:{p}": n for p, n in routed.items()}}
    )


@dg.job(name=EMAIL_EVENTS_ROUTER_JOB, description="Route email events to their pod's queue.")
def email_events_router_job() -> None:
    route_email_events()


# --- template statistics -------------------------------------------------------------------------


def _template_stats_asset(partitions: dg.DailyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="template_stats",
        group_name=GROUP,
        owners=OWNERS,
        kinds={"postgres"},
        deps=["notifications", "delivery_events"],
        partitions_def=partitions,
        freshness_policy=DAILY_FRESHNESS,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=8),
        description=(
            "analytics.template_stats_daily: notifications per (day, tenant, template, current "
            "status), days in the configured time zone. Counts notifications, never receipts, "
            "so duplicates cannot inflate them; re-materializing a day gives the same rows."
        ),
        metadata={
            "dagster/table_name": "analytics.template_stats_daily",
            "dagster/column_schema": table_schema(
                ("day", "date", "the day the notification was sent, in the configured zone"),
                ("tenant_id", "text", "the sending tenant"),
                ("template_id", "text", "the email template"),
                ("status", "text", "current status"),
                ("notification_count", "integer", "notifications of that day, template and status"),
            ),
        },
    )
    def template_stats(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        email_delivery: EmailDelivery,
    ) -> dg.MaterializeResult:
        window = context.partition_time_window
        first = window.start.date()
        last = (window.end - timedelta(seconds=1)).date()
        rows: dict[str, int] = {}
        day = first
        while day <= last:
            with warehouse.connection() as conn:
                rows[day.isoformat()] = write_template_stats_day(conn, day, email_delivery.zone)
            day += timedelta(days=1)
        with warehouse.connection() as conn:
            preview = template_stats_preview(conn, first, last)
        return dg.MaterializeResult(
            metadata={
                "rows_by_day": dg.MetadataValue.json(rows),
                "preview": dg.MetadataValue.md(preview),
            }
        )

    return template_stats


TEMPLATE_PREVIEW_ROWS = 15


def template_stats_preview(conn: psycopg.Connection, first: date, last: date) -> str:
    """The materialized days of analytics.template_stats_daily as a Markdown table: one row per
    tenant and template, a column per status, the most sent first."""
    frame = query_frame(
        conn,
        "select tenant_id as tenant, template_id as template, status, notification_count "
        "from analytics.template_stats_daily where day between %s and %s",
        (first, last),
    )
    if frame.empty:
        return "No notifications on these days."
    table = frame.pivot_table(
        index=["tenant", "template"],
        columns="status",
        values="notification_count",
        aggfunc="sum",
        fill_value=0,
    )
    table = table.assign(total=table.sum(axis=1)).reset_index()
    table = table.sort_values(
        ["total", "tenant", "template"], ascending=[False, True, True], kind="stable"
    )
    return markdown_head(
        table,
        TEMPLATE_PREVIEW_ROWS,
        "tenant/template row(s) in analytics.template_stats_daily",
    )


def _recent_days_schedule(job: Any, zone: str, days: int) -> dg.ScheduleDefinition:
    """Daily after midnight: yesterday and the days before it whose counts late receipts may
    still change (the dashboard's 7-day window)."""

    @dg.schedule(
        name="template_stats_schedule",
        cron_schedule="20 0 * * *",
        execution_timezone=zone,
        job=job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Recompute the template statistics of the last 7 whole days.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        today = context.scheduled_execution_time.astimezone(ZoneInfo(zone)).date()
        for n in range(1, days + 1):
            key = (today - timedelta(days=n)).isoformat()
            yield dg.RunRequest(run_key=f"{key}@{today.isoformat()}", partition_key=key)

    return _schedule


# --- retention -----------------------------------------------------------------------------------


@dg.op(description="Archive notifications past retention without personal data, then delete.")
def archive_expired_notifications(
    context: dg.OpExecutionContext, warehouse: WarehouseResource, email_delivery: EmailDelivery
) -> None:
    report = run_retention(
        warehouse.connection,
        datetime.now(UTC),
        email_delivery.zone,
        default_days=email_delivery.retention_days,
    )
    context.log.info("retention: %s", report)
    context.add_output_metadata(dict(report.__dict__))


@dg.job(name=RETENTION_JOB, description="Keep personal data of notifications 7 full days.")
def notification_retention_job() -> None:
    archive_expired_notifications()


email_sent_drain_job = dg.define_asset_job(
    EMAIL_SENT_JOB, selection=["notifications"], description="Drain queue email_sent."
)
email_receipts_drain_job = dg.define_asset_job(
    EMAIL_RECEIPTS_JOB,
    selection=["delivery_events"],
    description="Drain this pod's queue email_events.<pod> (SUPPORTFLOW_POD): apply receipts.",
)


# raw.notification_history is written by the `notification_retention` op, not by an asset;
# declared as an asset so the mart's lineage ends at a described node.
notification_history = dg.AssetSpec(
    key="notification_history",
    description=(
        "raw.notification_history: notifications past retention, kept without recipient or "
        "personal data (written by the notification_retention job)."
    ),
    group_name="email_delivery",
    owners=["team:notifications"],
    kinds={"postgres"},
    metadata={"dagster/table_name": "raw.notification_history"},
)


# --- definitions ---------------------------------------------------------------------------------


def build_defs(config: EmailDeliverySettings) -> dg.Definitions:
    """The email delivery definitions for one deployment (pod, time zone, senders)."""
    partitions = daily_partitions(config.timezone)
    template_stats = _template_stats_asset(partitions)
    stats_job = dg.define_asset_job(
        TEMPLATE_STATS_JOB,
        selection=["template_stats"],
        description="Recompute analytics.template_stats_daily for the selected days.",
    )
    return dg.Definitions(
        assets=[notifications, delivery_events, template_stats, notification_history],
        asset_checks=[status_set_at_most_once],
        jobs=[
            email_sent_drain_job,
            email_receipts_drain_job,
            email_events_router_job,
            stats_job,
            notification_retention_job,
        ],  # fmt: skip
        schedules=[
            _recent_days_schedule(stats_job, config.timezone, 7),
            dg.ScheduleDefinition(
                name="notification_retention_schedule",
                job=notification_retention_job,
                cron_schedule="40 0 * * *",
                execution_timezone=config.timezone,
                description="Archive notifications past retention without personal data, nightly.",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
        ],
        resources={
            "email_delivery": EmailDelivery(
                pod=config.pod,
                default_pod=config.default_pod,
                timezone=config.timezone,
                internal_senders=list(config.internal_senders),
                retention_days=config.retention_days,
                retry_base_seconds=config.retry_base_seconds,
            )
        },
    )

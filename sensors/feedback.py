"""Sensors of the feedback domain: the `feedback` queue sensor launches a drain run of
`feedback_ingest_job` (no pulling); the report-changes sensor writes again the insight reports
of days whose feedback changed after their report (an edited post, a late item)."""

from datetime import UTC, datetime

import dagster as dg

from assets.feedback.defs import feedback_ingest_job
from assets.feedback.insights import DAYS_READ_BEFORE, insight_partitions, insight_reports_job
from assets.feedback.store import changed_report_days
from resources.warehouse import WarehouseResource
from sensors.queues import queue_drain_sensor
from sensors.runs import changed_day_requests

feedback_queue_sensor = queue_drain_sensor(
    name="feedback_queue_sensor",
    queue="feedback",
    job=feedback_ingest_job,
    description="Drain pushed feedback (queue `feedback`) into raw.feedback_items and enrich it.",
    run_config={"ops": {"feedback_items": {"config": {"pull": False, "drain": True}}}},
)


@dg.sensor(
    name="insight_report_changes_sensor",
    job=insight_reports_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Writes again exactly the daily insight reports that read feedback which "
    "changed after they were written (edited Discourse posts re-enriched, late items).",
)
def insight_report_changes_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource
):
    with warehouse.connection() as conn:
        changed = changed_report_days(conn, DAYS_READ_BEFORE)
    requests = changed_day_requests(
        context.instance,
        insight_reports_job.name,
        changed,
        insight_partitions.start.date(),
        datetime.now(UTC).date(),
        "rereport",
        {"supportflow/rereport": "feedback-changed"},
    )
    if not requests:
        return dg.SkipReason("no reported day's feedback changed since its report")
    return requests


defs = dg.Definitions(sensors=[feedback_queue_sensor, insight_report_changes_sensor])

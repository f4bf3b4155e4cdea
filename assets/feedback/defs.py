"""Feedback insights: the Dagster assets, jobs and schedules of group `feedback`.

    sources (assets.feedback.sources) ─► feedback_items ─► feedback_enrichment ─► insight_reports
    webhook ─► queue feedback ─┘                                                   [daily]

`feedback_items` pulls every active pulled source (or one workspace's) and drains the `feedback`
queue; each pulled page commits with its cursor. `feedback_enrichment` adds language, sentiment
and topics (assets.feedback.enrichment). `insight_reports` (assets.feedback.insights) writes
the daily reports. The domain logic lives in those modules; this one only wires it to Dagster.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg

from assets.feedback.insights import insight_reports, insight_reports_job
from assets.feedback.rules import FeedbackValidationError, SourceConfigError, SourceRef
from assets.feedback.sources import SOURCE_KINDS
from assets.feedback.sources.base import PullContext
from assets.feedback.sources.webhook import item_from_message
from assets.feedback.store import (
    UpsertCounts,
    clear_pull_failure,
    get_workspace,
    list_sources,
    lock_source,
    record_pull_failure,
    save_cursor,
    unlock_source,
    upsert_items,
)
from resources.alerts import AlertsResource
from resources.columns import table_schema
from resources.discourse import DiscourseClient, DiscourseError
from resources.partitions import fresh_within
from resources.queues import AlertFn, BatchOutcome, Message, QueueResource, drain, kind_of
from resources.warehouse import WarehouseResource

GROUP = "feedback"
OWNERS = ["team:data-eng"]
FEEDBACK_QUEUE = "feedback"

Connect = Callable[[], Any]


# --- pulling and applying (plain functions the assets call) --------------------------------------


@dataclass
class SourcePull:
    source: str
    fetched: int = 0
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    skipped: str = ""
    error: str = ""  # the pull failed (what it committed before failing stays)


def pull_source(connect: Connect, source: SourceRef, context: PullContext) -> SourcePull:
    """Pull one source; each batch's items and cursor commit together. A source another run is
    pulling right now is skipped (a session advisory lock), so cursors never race."""
    result = SourcePull(f"{source.workspace_name}/{source.name}")
    kind = SOURCE_KINDS.get(source.kind)
    if kind is None or not kind.pulled:
        result.skipped = "not a pulled kind"
        return result
    with connect() as lock_conn:
        if not lock_source(lock_conn, source.source_id):
            result.skipped = "being pulled by another run"
            return result
        try:
            fresh = list_sources(lock_conn, source.workspace_name, [source.kind])
            current = next((s for s in fresh if s.source_id == source.source_id), None)
            if current is None:
                result.skipped = "no longer active"
                return result
            lock_conn.commit()  # the lock is session-level; don't hold a snapshot meanwhile
            for batch in kind.pull(current, context):
                with connect() as conn:
                    result.counts.add(upsert_items(conn, batch.items))
                    save_cursor(conn, source.source_id, batch.cursor)
                result.fetched += batch.fetched
        finally:
            unlock_source(lock_conn, source.source_id)
    return result


def describe_pull_error(exc: Exception) -> str:
    """A failed pull in one line for `sources list` and the alert: our own errors say what
    failed (never a credential); any other (a database error may quote data) only its type."""
    if isinstance(exc, DiscourseError | SourceConfigError | FeedbackValidationError):
        return str(exc)[:500]
    return kind_of(exc)


def pull_sources(
    connect: Connect,
    discourse: DiscourseClient,
    workspace: str | None = None,
    log: Any = None,
    raise_alert: AlertFn | None = None,
) -> list[SourcePull]:
    """Pull every active pulled source (of one workspace, or all), each on its own: a source
    that fails records its error (`sources list` shows it), raises one alert and the others
    proceed; what it committed before failing stays."""
    pulled_kinds = [name for name, kind in SOURCE_KINDS.items() if kind.pulled]
    with connect() as conn:
        if workspace:
            get_workspace(conn, workspace)  # a mistyped name is an error, not "nothing to do"
        sources = list_sources(conn, workspace or None, pulled_kinds)
    context = PullContext(
        connection=connect, discourse_client=discourse, secret_box=discourse.secret_box(), log=log
    )
    results = []
    for source in sources:
        name = f"{source.workspace_name}/{source.name}"
        try:
            result = pull_source(connect, source, context)
        except Exception as exc:
            result = SourcePull(name, error=describe_pull_error(exc))
            _pull_failed(connect, source, result.error, log, raise_alert)
        else:
            if not result.skipped:
                with connect() as conn:
                    clear_pull_failure(conn, source.source_id)
        results.append(result)
    return results


def _pull_failed(
    connect: Connect, source: SourceRef, error: str, log: Any, raise_alert: AlertFn | None
) -> None:
    name = f"{source.workspace_name}/{source.name}"
    failed_pulls = None
    try:
        with connect() as conn:
            failed_pulls = record_pull_failure(conn, source.source_id, error)
    except Exception as exc:  # the warehouse itself may be what failed; the alert still goes
        error = f"{error}; its error could not be recorded ({type(exc).__name__})"
    if log is not None:
        log.warning(f"feedback source {name} failed: {error}")
    if raise_alert is not None:
        raise_alert(
            f"feedback_source:{name}",
            f"feedback source {name} ({source.kind}) failed: {error}",
            {
                "workspace": source.workspace_name,
                "source": source.name,
                "kind": source.kind,
                "tenant_id": source.tenant_id,
                "failed_pulls_in_a_row": failed_pulls,
            },
        )


def apply_feedback_messages(connect: Connect, messages: list[Message]) -> BatchOutcome:
    """Upsert the items of `feedback` queue messages in one transaction. A malformed message,
    or one naming a source that is not that tenant's active webhook source, is rejected."""
    outcome = BatchOutcome()
    parsed = []
    for message in messages:
        try:
            parsed.append((message, item_from_message(message.body)))
        except (FeedbackValidationError, ValueError, TypeError) as exc:
            outcome.rejected[message.receipt] = f"invalid feedback message: {exc}"
    with connect() as conn:
        rows = conn.execute(
            """
            select s.source_id, s.workspace_id, w.tenant_id
            from control.feedback_sources s join control.workspaces w using (workspace_id)
            where s.source_id = any(%s) and s.kind = 'webhook' and s.active
            """,
            (sorted({item.source_id for _, item in parsed}),),
        ).fetchall()
        known = {source_id: (workspace_id, tenant) for source_id, workspace_id, tenant in rows}
        items = []
        for message, item in parsed:
            if known.get(item.source_id) != (item.workspace_id, item.tenant_id):
                outcome.rejected[message.receipt] = (
                    f"source {item.source_id} is not an active webhook source of workspace "
                    f"{item.workspace_id} (tenant {item.tenant_id})"
                )
            else:
                items.append(item)
        upsert_items(conn, items)
    return outcome


# --- assets --------------------------------------------------------------------------------------


# The sources are pulled and enriched every 15 minutes (feedback_pull_every_15_minutes).
PULL_FRESHNESS = fresh_within(timedelta(minutes=15))


class FeedbackPullConfig(dg.Config):
    """Run config of `feedback_items`: which workspace to pull (empty: all), and what to do."""

    workspace: str = ""
    pull: bool = True
    drain: bool = True


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "postgres"},
    freshness_policy=PULL_FRESHNESS,
    # The helpdesk source reads the tickets domain's tables, the conversations source the
    # conversations domain's messages.
    deps=[
        dg.AssetKey("zendesk_tickets"),
        dg.AssetKey("zendesk_ticket_comments"),
        dg.AssetKey("conversation_messages"),
    ],
    description="Every piece of feedback in one format (raw.feedback_items): pulled from "
    "Discourse, helpdesk and conversations sources, and pushed items drained from queue "
    "`feedback`.",
    metadata={
        "dagster/table_name": "raw.feedback_items",
        "dagster/column_schema": table_schema(
            ("item_id", "text", "hash of workspace, source, id"),
            ("workspace_id", "bigint", "control.workspaces.workspace_id"),
            ("tenant_id", "text", "the workspace's tenant"),
            ("source", "text", "source kind: discourse | zendesk | conversations | webhook"),
            ("external_id", "text", "the item's id at its source"),
            ("author", "text", "who wrote it, as the source names them"),
            ("text", "text", "plain text, HTML removed"),
            ("created_at", "timestamptz", "when it was written at the source"),
            ("raw_data", "jsonb", "source-specific fields (url, ticket, topic ...)"),
        ),
    },
)
def feedback_items(
    context: dg.AssetExecutionContext,
    config: FeedbackPullConfig,
    warehouse: WarehouseResource,
    queues: QueueResource,
    alerts: AlertsResource,
    discourse: DiscourseClient,
) -> dg.MaterializeResult:
    metadata: dict[str, Any] = {}
    if config.pull:
        pulls = pull_sources(
            warehouse.connection, discourse, config.workspace, context.log, alerts.raise_alert
        )
        for pull in pulls:
            context.log.info(
                f"{pull.source}: fetched {pull.fetched}, new {pull.counts.inserted}, "
                f"updated {pull.counts.updated}{' (' + pull.skipped + ')' if pull.skipped else ''}"
                f"{' (failed: ' + pull.error + ')' if pull.error else ''}"
            )
        # a failed source is alerted on its own and shows in `sources list`; the run goes on
        metadata["sources_pulled"] = len([p for p in pulls if not p.skipped and not p.error])
        metadata["sources_failed"] = len([p for p in pulls if p.error])
        metadata["pulled_new"] = sum(p.counts.inserted for p in pulls)
        metadata["pulled_updated"] = sum(p.counts.updated for p in pulls)
        metadata["pulled_fetched"] = sum(p.fetched for p in pulls)
    if config.drain:
        report = drain(
            queues,
            FEEDBACK_QUEUE,
            lambda batch: apply_feedback_messages(warehouse.connection, batch),
            raise_alert=alerts.raise_alert,
        )
        metadata.update({f"queue_{k}": v for k, v in report.as_metadata().items()})
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=GROUP,
    owners=OWNERS,
    kinds={"python", "scikitlearn", "postgres"},
    freshness_policy=PULL_FRESHNESS,
    deps=[feedback_items],
    description="Language (py3langid), sentiment (VADER or a per-tenant classifier when it "
    "beats VADER held out) and topics (TF-IDF + NMF per workspace) on raw.feedback_items.",
    metadata={
        "dagster/table_name": "raw.feedback_items",
        "dagster/column_schema": table_schema(
            ("language", "text", "detected language code"),
            ("language_score", "double precision", "py3langid's confidence, 0 .. 1"),
            ("sentiment_label", "text", "positive|neutral|negative"),
            ("sentiment_score", "double precision", "-1 .. 1"),
            ("sentiment_model", "text", "engine that scored it"),
            ("topics", "jsonb", "topic labels"),
            ("enriched_hash", "text", "content hash enriched"),
        ),
    },
)
def feedback_enrichment(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    # Imported here on purpose: enrichment loads scikit-learn and the language model, which
    # would slow every load of the code location (and the webhook service, CLI) by seconds.
    from assets.feedback.enrichment import enrich

    report = enrich(warehouse.connection)
    metadata: dict[str, Any] = {
        "workspaces": report.workspaces,
        "items_enriched": report.items_enriched,
        "topic_assignments_changed": report.topics_updated,
        "sentiment_engines": dg.MetadataValue.json(report.engines),
        "topics": dg.MetadataValue.json(report.topic_labels),
    }
    if report.evaluations:
        metadata["sentiment_evaluation"] = dg.MetadataValue.json(report.evaluations)
        lines = ["| tenant | engine | accuracy | macro F1 | majority acc. | majority F1 |",
                 "|---|---|---:|---:|---:|---:|"]  # fmt: skip
        for tenant, figures in sorted(report.evaluations.items()):
            for engine in (name for name in figures if isinstance(figures[name], dict)):
                if engine == "majority":
                    continue
                lines.append(
                    f"| {tenant} | {engine}{' (chosen)' if figures['chosen'] == engine else ''} "
                    f"| {figures[engine]['accuracy']:.3f} | {figures[engine]['macro_f1']:.3f} "
                    f"| {figures['majority']['accuracy']:.3f} "
                    f"| {figures['majority']['macro_f1']:.3f} |"
                )
        metadata["sentiment_evaluation_table"] = dg.MetadataValue.md("\n".join(lines))
    context.log.info(f"enriched {report.items_enriched} item(s); engines {report.engines}")
    return dg.MaterializeResult(metadata=metadata)


# --- jobs and schedules ---------------------------------------------------------------------

feedback_ingest_job = dg.define_asset_job(
    "feedback_ingest_job",
    selection=[feedback_items, feedback_enrichment],
    description="Pull every active feedback source, drain queue `feedback`, enrich.",
)

feedback_pull_job = dg.define_asset_job(
    "feedback_pull_job",
    selection=[feedback_items, feedback_enrichment],
    description="On demand: pull one workspace's sources now (set its name in the run config) "
    "and enrich.",
    config=dg.RunConfig(
        ops={"feedback_items": FeedbackPullConfig(workspace="", pull=True, drain=False)}
    ),
)

feedback_pull_schedule = dg.ScheduleDefinition(
    name="feedback_pull_schedule",
    job=feedback_ingest_job,
    cron_schedule="*/15 * * * *",
    description="Pull feedback sources every 15 minutes.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

insight_reports_schedule = dg.build_schedule_from_partitioned_job(
    insight_reports_job,
    name="insight_reports_schedule",
    description="Write yesterday's feedback insight reports at 00:40 UTC.",
    hour_of_day=0,
    minute_of_hour=40,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

ENRICHMENT_LAG_MINUTES = 30


@dg.asset_check(
    asset=feedback_enrichment,
    name="every_item_enriched",
    description=(
        "Every feedback item has language, sentiment and topics for its current text, except "
        f"items written in the last {ENRICHMENT_LAG_MINUTES} minutes (the next run's)."
    ),
)
def every_item_enriched(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connection() as conn:
        waiting, oldest = conn.execute(
            "select count(*), min(updated_at) from raw.feedback_items"
            " where enriched_hash is distinct from content_hash"
            " and updated_at < now() - make_interval(mins => %s)",
            (ENRICHMENT_LAG_MINUTES,),
        ).fetchone()
    return dg.AssetCheckResult(
        passed=waiting == 0,
        metadata={
            "items_not_enriched": waiting,
            "oldest_waiting_since": oldest.isoformat() if oldest else "",
        },
    )


@dg.asset_check(
    asset=insight_reports,
    name="one_report_per_workspace_and_day",
    description=(
        "Each reported day (not waiting for a re-report) has one report per workspace, whose "
        "item count equals the workspace's items of that day written before the report."
    ),
)
def one_report_per_workspace_and_day(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connection() as conn:
        wrong = conn.execute(
            """
            with days as (
                select day, reported_at from control.insight_report_days
                where reported_at is not null
                  and (changed_at is null or changed_at <= reported_at)
            ), expected as (
                select f.workspace_id, d.day, count(*) as items
                from days d
                join raw.feedback_items f
                  on f.created_at >= d.day::timestamp at time zone 'UTC'
                 and f.created_at < (d.day + 1)::timestamp at time zone 'UTC'
                 and f.ingested_at <= d.reported_at
                group by 1, 2
            ), reported as (
                select r.workspace_id, r.day, r.items
                from analytics.insight_reports r join days d using (day)
                where r.source = 'all'
            )
            select coalesce(e.workspace_id, r.workspace_id), coalesce(e.day, r.day),
                   coalesce(e.items, 0), coalesce(r.items, 0)
            from expected e full join reported r using (workspace_id, day)
            where coalesce(e.items, 0) <> coalesce(r.items, 0)
            order by 2, 1
            """
        ).fetchall()
        days = conn.execute(
            "select count(*) from control.insight_report_days where reported_at is not null"
        ).fetchone()[0]
    return dg.AssetCheckResult(
        passed=not wrong,
        metadata={
            "days_reported": days,
            "reports_disagreeing": len(wrong),
            "first_disagreeing": dg.MetadataValue.json(
                [
                    {"workspace_id": w, "day": d.isoformat(), "items": e, "reported": r}
                    for w, d, e, r in wrong[:10]
                ]
            ),
        },
    )


defs = dg.Definitions(
    assets=[feedback_items, feedback_enrichment, insight_reports],
    asset_checks=[every_item_enriched, one_report_per_workspace_and_day],
    jobs=[feedback_ingest_job, feedback_pull_job, insight_reports_job],
    schedules=[feedback_pull_schedule, insight_reports_schedule],
)

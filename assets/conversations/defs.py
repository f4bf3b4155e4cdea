"""Conversations in Dagster: the `messages` drain (assets `conversation_messages`,
`conversation_tickets`, `queue_counters`), the `conversation_events` drain, the closure and
follow-up sweep on a schedule, the counters' check against a recount, and the daily figures
(`conversation_daily`, daily partitions, backfillable in one run).

The rules are `assets/conversations/rules.py`, the SQL `assets/conversations/store.py`; the sensors
that launch the drains are `sensors/conversations.py`.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from assets.conversations.rules import DEFAULT_CLOSE_AFTER_MINUTES, STATES
from assets.conversations.store import (
    LANE_BACKLOG,
    Engines,
    MessageTally,
    compute_conversation_daily,
    counter_mismatches,
    event_batch_applier,
    message_drain_stages,
    recount_counters,
    sweep,
)
from resources.alerts import AlertsResource
from resources.columns import table_schema
from resources.frames import markdown_head, query_frame
from resources.partitions import DAILY_FRESHNESS, daily_partitions, window_days
from resources.queues import QueueResource, drain
from resources.settings import Settings
from resources.warehouse import WarehouseResource

OWNERS = ["team:data-eng"]
GROUP = "conversations"
MESSAGES_DRAIN_JOB = "conversation_messages_drain"
EVENTS_DRAIN_JOB = "conversation_events_drain"
CLOSURE_JOB = "conversation_closure"


class ConversationSettings(dg.ConfigurableResource):
    """The closure period (SUPPORTFLOW_TICKET_CLOSE_AFTER_MINUTES; tenants may override it) and
    how many worker processes the messages drain applies a deep backlog in
    (SUPPORTFLOW_DRAIN_PROCESSES)."""

    close_after_minutes: int = DEFAULT_CLOSE_AFTER_MINUTES
    drain_processes: int = 1


class DrainConfig(dg.Config):
    batch_size: int = 2000
    max_seconds: float = 600.0
    visibility_timeout: float = 300.0
    retry_base_seconds: float = 10.0


def _alert_fn(alerts: AlertsResource):
    return lambda source, summary, details: alerts.raise_alert(source, summary, details)


def _drain(
    queues: QueueResource,
    queue: str,
    apply_batch,
    alerts: AlertsResource,
    config: DrainConfig,
    prepare_batch=None,
    raw_bodies: bool = False,
):
    # The conversations' queues keep no ledger of acknowledged ids (QUEUES_WITHOUT_LEDGER):
    # every message is applied, and the database's unique keys per tenant make a repeat change
    # nothing.
    return drain(
        queues,
        queue,
        apply_batch,
        raise_alert=_alert_fn(alerts),
        batch_size=config.batch_size,
        visibility_timeout=config.visibility_timeout,
        retry_base_seconds=config.retry_base_seconds,
        max_seconds=config.max_seconds,
        skip_previously_acked=False,
        prepare_batch=prepare_batch,
        raw_bodies=raw_bodies,
    )


COUNTER_COLUMNS = table_schema(
    ("tenant_id", "text", "the work queue's tenant"),
    ("queue_id", "bigint", "control.work_queues.queue_id"),
    ("state", "text", "created|working|pending|followup|solved"),
    ("ticket_count", "bigint", "tickets in the queue in that state"),
)
DAILY_COLUMNS = table_schema(
    ("day", "date", "UTC day (the partition)"),
    ("tenant_id", "text", "the origin's tenant"),
    ("origin_id", "bigint", "control.origins.origin_id"),
    ("origin_name", "text", "the origin's name"),
    ("channel", "text", "facebook|instagram|x|whatsapp|linkedin|mail"),
    ("new_tickets", "integer", "tickets created that day"),
    ("customer_messages", "integer", "visible customer messages"),
    ("agent_replies", "integer", "agent replies and AI messages"),
    ("first_response_p50_seconds", "double precision", "median first response"),
    ("first_response_p90_seconds", "double precision", "90th percentile first response"),
    ("solved", "integer", "tickets moved to solved that day"),
    ("closed", "integer", "tickets closed that day"),
    ("reopened", "integer", "solved or pending tickets reopened"),
    ("computed_at", "timestamptz", "when the row was written"),
)
MESSAGE_COLUMNS = table_schema(
    ("tenant_id", "text", "the origin's tenant"),
    ("message_id", "text", "the channel's id, unique per tenant"),
    ("ticket_id", "bigint", "null while shadowed"),
    ("thread_id", "bigint", "the (origin, customer) thread it belongs to"),
    ("kind", "text", "customer | agent_reply | private_note | ai_message | ai_suggestion"),
    ("text", "text", "full-text indexed (column search)"),
    ("sent_at", "timestamptz", "when the channel says it was sent"),
    ("deleted", "boolean", "removed on the channel (message_removed)"),
    ("hidden", "boolean", "hidden on the channel (message_hidden, until unhidden)"),
    ("shadowed", "boolean", "its origin was disabled"),
)
TICKET_COLUMNS = table_schema(
    ("ticket_id", "bigint", "the platform's ticket id"),
    ("tenant_id", "text", "the origin's tenant"),
    ("sequence", "bigint", "unique and increasing per tenant"),
    ("thread_id", "bigint", "the (origin, author) thread"),
    ("state", "text", "created working pending followup solved closed"),
    ("priority", "text", "low normal high urgent"),
    ("visible_message_count", "integer", "messages neither deleted, hidden nor shadowed"),
    ("star_rating", "smallint", "the latest 1-5 rating a customer message carried"),
    ("sentiment_label", "text", "positive | neutral | negative, of the customer's messages"),
    ("first_response_at", "timestamptz", "first agent reply or AI message"),
    ("state_changed_at", "timestamptz", "when the state last changed"),
)


@dg.multi_asset(
    name="drain_messages",
    specs=[
        dg.AssetSpec(
            "conversation_messages",
            group_name=GROUP,
            owners=OWNERS,
            kinds={"postgres"},
            description="raw.conversation_messages and raw.conversation_threads: every channel "
            "message once per (tenant, message_id), in its (origin, author) thread.",
            metadata={
                "dagster/column_schema": MESSAGE_COLUMNS,
                "dagster/table_name": "raw.conversation_messages",
            },
        ),
        dg.AssetSpec(
            "conversation_tickets",
            group_name=GROUP,
            owners=OWNERS,
            kinds={"postgres"},
            deps=["conversation_messages"],
            description="raw.conversation_tickets with their state log (raw.ticket_state_changes) "
            "and work-queue membership (raw.work_queue_members).",
            metadata={
                "dagster/column_schema": TICKET_COLUMNS,
                "dagster/table_name": "raw.conversation_tickets",
            },
        ),
        dg.AssetSpec(
            "queue_counters",
            group_name=GROUP,
            owners=OWNERS,
            kinds={"postgres"},
            deps=["conversation_tickets"],
            description="analytics.queue_counters: tickets per work queue and state, moved in the "
            "transaction that moves a ticket (exact at every commit).",
            metadata={
                "dagster/table_name": "analytics.queue_counters",
                "dagster/column_schema": COUNTER_COLUMNS,
            },
        ),
    ],
    can_subset=False,
    description="Drain queue `messages`: origins, threads, tickets (state machine), messages, "
    "work-queue membership and counters, one transaction per batch.",
)
def conversation_messages_drain(
    context: dg.AssetExecutionContext,
    config: DrainConfig,
    warehouse: WarehouseResource,
    queues: QueueResource,
    alerts: AlertsResource,
    conversation_settings: ConversationSettings,
):
    tally = MessageTally()
    # a deep backlog is split by tenant over worker processes; a few messages are not worth
    # starting them
    lanes = conversation_settings.drain_processes
    if lanes > 1 and queues.depth("messages") < LANE_BACKLOG:
        lanes = 1
    with message_drain_stages(
        warehouse,
        tally,
        lanes=lanes,
        default_close_after=conversation_settings.close_after_minutes,
    ) as (prepare, apply):
        # the bodies as JSON text: validation decodes them straight into the message types
        report = _drain(
            queues, "messages", apply, alerts, config, prepare_batch=prepare, raw_bodies=True
        )
    context.log.info("drained messages in %d process(es): %s, %s", lanes, report, tally)
    yield dg.MaterializeResult(
        asset_key="conversation_messages",
        metadata={
            **report.as_metadata(),
            "stored": tally.stored,
            "shadowed": tally.shadowed,
            "already_stored": tally.duplicates,
            "flags_applied": tally.flags_applied,
        },
    )
    yield dg.MaterializeResult(
        asset_key="conversation_tickets",
        metadata={
            "tickets_created": tally.tickets_created,
            "state_changes": tally.state_changes,
        },
    )
    yield dg.MaterializeResult(asset_key="queue_counters", metadata=_counter_metadata(warehouse))


COUNTER_PREVIEW_ROWS = 15


def _counter_metadata(warehouse: WarehouseResource) -> dict[str, Any]:
    """Memberships per state, and a preview of the counters: a row per work queue, a column per
    state in lifecycle order, the queues with the most open (not yet solved) tickets first."""
    with warehouse.connection() as conn:
        counters = query_frame(
            conn,
            "select c.tenant_id as tenant, coalesce(q.name, '#' || c.queue_id) as queue, "
            "c.state, c.ticket_count "
            "from analytics.queue_counters c left join control.work_queues q using (queue_id)",
        )
    totals = counters.groupby("state")["ticket_count"].sum()  # sorted by state
    metadata: dict[str, Any] = {f"memberships_{state}": int(n) for state, n in totals.items()}
    if counters.empty:
        metadata["preview"] = dg.MetadataValue.md("No work-queue members.")
        return metadata
    table = counters.pivot_table(
        index=["tenant", "queue"],
        columns="state",
        values="ticket_count",
        aggfunc="sum",
        fill_value=0,
    ).reindex(columns=[s for s in STATES if s in set(counters["state"])])
    open_states = [s for s in table.columns if s not in ("solved", "closed")]
    table = table.assign(open=table[open_states].sum(axis=1)).reset_index()
    table = table.sort_values(
        ["open", "tenant", "queue"], ascending=[False, True, True], kind="stable"
    )
    metadata["preview"] = dg.MetadataValue.md(
        markdown_head(table, COUNTER_PREVIEW_ROWS, "work queue(s) in analytics.queue_counters")
    )
    return metadata


@dg.asset_check(
    asset="queue_counters",
    name="counters_equal_recount",
    description="Every counter equals a recount of raw.work_queue_members.",
)
def counters_equal_recount(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connection() as conn:
        mismatches = counter_mismatches(conn)
        recounted = sum(recount_counters(conn).values())
    return dg.AssetCheckResult(
        passed=not mismatches,
        metadata={
            "mismatches": len(mismatches),
            "first_mismatches": dg.MetadataValue.json(mismatches[:20]),
            "memberships": recounted,
        },
    )


conversation_messages_drain_job = dg.define_asset_job(
    MESSAGES_DRAIN_JOB,
    selection=dg.AssetSelection.assets(conversation_messages_drain),
    description="Drain queue messages into conversations (launched by the queue sensor).",
)


def _ticket_materializations(context: dg.OpExecutionContext, description: str, metadata) -> None:
    for key in ("conversation_tickets", "queue_counters"):
        context.log_event(
            dg.AssetMaterialization(asset_key=key, description=description, metadata=metadata)
        )


@dg.op(description="Drain queue conversation_events: agents' and rules' actions on tickets.")
def drain_conversation_events(
    context: dg.OpExecutionContext,
    config: DrainConfig,
    warehouse: WarehouseResource,
    queues: QueueResource,
    alerts: AlertsResource,
    conversation_settings: ConversationSettings,
) -> None:
    tally = MessageTally()
    apply_batch = event_batch_applier(
        warehouse.connection,
        tally,
        engines=Engines.default(),
        default_close_after=conversation_settings.close_after_minutes,
    )
    report = _drain(queues, "conversation_events", apply_batch, alerts, config)
    context.log.info("drained conversation events: %s, %s", report, tally)
    if report.applied:
        _ticket_materializations(
            context,
            "conversation events applied",
            {
                **report.as_metadata(),
                "events_applied": tally.events_applied,
                "events_without_effect": tally.events_without_effect,
                "state_changes": tally.state_changes,
            },
        )


@dg.job(
    name=EVENTS_DRAIN_JOB,
    description="Apply queued conversation events (launched by the queue sensor).",
)
def conversation_events_drain_job() -> None:
    drain_conversation_events()


class ClosureConfig(dg.Config):
    """`now`: the moment to sweep at, ISO 8601 with offset; empty means the current time."""

    now: str = ""


@dg.op(description="Close solved/pending tickets past their closure period; wake due follow-ups.")
def close_due_conversations(
    context: dg.OpExecutionContext,
    config: ClosureConfig,
    warehouse: WarehouseResource,
    conversation_settings: ConversationSettings,
) -> None:
    now = datetime.fromisoformat(config.now) if config.now else datetime.now(UTC)
    if now.tzinfo is None:
        raise dg.Failure(f"now must carry a UTC offset, got {config.now!r}")
    with warehouse.connection() as conn:
        result = sweep(conn, now, conversation_settings.close_after_minutes)
    context.log.info(
        "sweep at %s: %d closed, %d follow-ups due", now, result.closed, result.followed_up
    )
    if result.closed or result.followed_up:
        _ticket_materializations(
            context,
            "closure and follow-up schedule",
            {"closed": result.closed, "followups_due": result.followed_up, "at": now.isoformat()},
        )


@dg.job(
    name=CLOSURE_JOB,
    description="Apply the closure and follow-up schedule to conversation tickets.",
    tags={"supportflow/conversations": "sweep"},
)
def conversation_closure_job() -> None:
    close_due_conversations()


# Every two minutes: a ticket changes within 2 minutes (plus a run's start-up) of becoming due.
# The drains apply an overdue transition themselves before anything newer, so a late sweep
# changes when a closure becomes visible, never what it is.
conversation_closure_schedule = dg.ScheduleDefinition(
    name="conversation_closure_every_2_minutes",
    job=conversation_closure_job,
    cron_schedule="*/2 * * * *",
    execution_timezone="UTC",
    description="Close tickets whose closure period passed and wake due follow-ups.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


# --- daily figures -------------------------------------------------------------------------------

# From SUPPORTFLOW_PARTITIONS_START, fixed per deployment so partition keys stay stable.
conversation_daily_partitions = daily_partitions()


@dg.asset(
    name="conversation_daily",
    group_name=GROUP,
    owners=OWNERS,
    kinds={"postgres"},
    deps=["conversation_messages", "conversation_tickets"],
    partitions_def=conversation_daily_partitions,
    freshness_policy=DAILY_FRESHNESS,
    # A day is a few aggregate queries: a backfill of any length runs as one run.
    backfill_policy=dg.BackfillPolicy.single_run(),
    description="analytics.conversation_daily per UTC day, tenant and origin: new tickets, "
    "customer messages, agent replies, first-response p50/p90, solved, closed, reopened.",
    metadata={
        "dagster/table_name": "analytics.conversation_daily",
        "dagster/column_schema": DAILY_COLUMNS,
    },
)
def conversation_daily(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    rows: dict[str, int] = {}
    for day in window_days(context):
        with warehouse.connection() as conn:
            rows[day.isoformat()] = compute_conversation_daily(conn, day)
        context.log.info("conversation_daily %s: %d rows", day, rows[day.isoformat()])
    return dg.MaterializeResult(
        metadata={"rows": sum(rows.values()), "rows_per_day": dg.MetadataValue.json(rows)}
    )


conversation_daily_job = dg.define_asset_job(
    "conversation_daily_job",
    selection=[conversation_daily],
    description="Compute one day's conversation figures per tenant and origin.",
)
# 00:30 UTC, for yesterday: half an hour for yesterday's late messages to arrive.
conversation_daily_schedule = dg.build_schedule_from_partitioned_job(
    conversation_daily_job,
    name="conversation_daily_schedule",
    description="Compute yesterday's conversation figures at 00:30 UTC.",
    hour_of_day=0,
    minute_of_hour=30,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


def build_defs(settings: Settings | None = None) -> dg.Definitions:
    """The conversations definitions, with the closure period from the settings."""
    minutes = (
        settings.for_dagster(
            "SUPPORTFLOW_TICKET_CLOSE_AFTER_MINUTES", settings.ticket_close_after_minutes
        )
        if settings is not None
        else DEFAULT_CLOSE_AFTER_MINUTES
    )
    return dg.Definitions(
        assets=[conversation_messages_drain, conversation_daily],
        asset_checks=[counters_equal_recount],
        jobs=[
            conversation_messages_drain_job,
            conversation_events_drain_job,
            conversation_closure_job,
            conversation_daily_job,
        ],
        schedules=[conversation_closure_schedule, conversation_daily_schedule],
        resources={
            "conversation_settings": ConversationSettings(
                close_after_minutes=minutes,
                drain_processes=(
                    settings.for_dagster("SUPPORTFLOW_DRAIN_PROCESSES", settings.drain_processes)
                    if settings is not None
                    else 1
                ),
            )
        },
    )


defs = build_defs()

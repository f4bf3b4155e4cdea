"""Zendesk tickets, users and comments, one Dagster partition per desk.

`zendesk_tickets` (with `zendesk_users` and groups from the same pages' sideloads) follows the
cursor-based incremental ticket export; `zendesk_ticket_comments` follows the incremental ticket
events export with comment events. Both resume from cursors kept in `control.desks`, committed
page by page with the rows (see `assets/tickets/store.py`). Partitions are the desks' names, kept in
step with `control.desks` by the desk sync sensor (`sensors/tickets.py`), which also launches
`zendesk_desk_sync` runs. Asset checks: no duplicate (desk, ticket) rows, every comment's ticket
exists, and each active desk synced recently.
"""

import dagster as dg
import psycopg
from pydantic import Field

from assets.tickets.desks import (
    Desk,
    DeskError,
    get_desk,
    open_desk_api,
    record_sync_result,
    resync_desk,
)
from assets.tickets.rules import DESK_TAG
from assets.tickets.store import SplitPolicy, sync_comments, sync_tickets
from resources.columns import table_schema
from resources.warehouse import WarehouseResource
from resources.zendesk import ZendeskApi, ZendeskAuthError, ZendeskClient, ZendeskError

DESK_PARTITIONS = dg.DynamicPartitionsDefinition(name="desks")
DESK_SYNC_JOB = "zendesk_desk_sync"
OWNERS = ["team:data-eng"]
# a desk is stale when it has not finished a sync for this many sync intervals
FRESHNESS_INTERVALS = 3


TICKET_SCHEMA = table_schema(
    ("desk_id", "bigint", "control.desks.desk_id: the Zendesk account the ticket is in"),
    ("ticket_id", "bigint", "Zendesk's ticket id (unique within its desk)"),
    ("tenant_id", "text", "the desk's tenant"),
    ("status", "text", "new | open | pending | hold | solved | closed | deleted"),
    ("subject", "text", "the ticket's subject"),
    ("priority", "text", "urgent | high | normal | low, or null"),
    ("ticket_type", "text", "problem | incident | question | task, or null"),
    ("requester_id", "bigint", "Zendesk user id of the requester"),
    ("req_name", "text", "requester's name, from the sideloaded users"),
    ("req_email", "text", "requester's email address, from the sideloaded users"),
    ("assignee_id", "bigint", "Zendesk user id of the assignee, or null"),
    ("assignee_name", "text", "assignee's name, from the sideloaded users"),
    ("group_id", "bigint", "Zendesk group id, or null"),
    ("group_name", "text", "the group's name, from the sideloaded groups"),
    ("organization_id", "bigint", "Zendesk organization id, or null"),
    ("created_at", "timestamptz", "when the ticket was created in Zendesk"),
    ("updated_at", "timestamptz", "last update in Zendesk"),
    ("generated_at", "timestamptz", "export's generated_timestamp: newer rows win"),
    ("solved_at", "timestamptz", "when the ticket was solved (from its metric set), or null"),
    ("is_deleted", "boolean", "deleted in Zendesk (kept, marked)"),
    ("raw_data", "jsonb", "the whole ticket object as the API returned it"),
    ("change_seq", "bigint", "raw.zendesk_change_seq number of its last write"),
)
USER_SCHEMA = table_schema(
    ("desk_id", "bigint", "control.desks.desk_id"),
    ("user_id", "bigint", "Zendesk's user id"),
    ("tenant_id", "text", "the desk's tenant"),
    ("name", "text", "the user's name"),
    ("email", "text", "the user's email address"),
    ("role", "text", "end-user | agent | admin"),
    ("external_id", "text", "the account's own id for the user, or null"),
    ("raw_data", "jsonb", "the whole user object as sideloaded"),
)
COMMENT_SCHEMA = table_schema(
    ("desk_id", "bigint", "control.desks.desk_id"),
    ("comment_id", "bigint", "Zendesk's comment id"),
    ("tenant_id", "text", "the desk's tenant"),
    ("ticket_id", "bigint", "the ticket the comment is on"),
    ("author_id", "bigint", "Zendesk user id of the author"),
    ("public", "boolean", "visible to the requester (false: internal note)"),
    ("body", "text", "the comment's text"),
    ("created_at", "timestamptz", "when the comment was written"),
    ("raw_data", "jsonb", "the comment event as exported"),
    ("change_seq", "bigint", "raw.zendesk_change_seq number of its insert"),
)


def _load_desk(warehouse: WarehouseResource, name: str) -> Desk:
    with warehouse.connection() as conn:
        try:
            return get_desk(conn, name)
        except DeskError as exc:
            raise dg.Failure(str(exc), allow_retries=False) from None


def _fail(warehouse: WarehouseResource, desk: Desk, exc: Exception) -> dg.Failure:
    """Record the error on the desk and turn it into a Dagster failure naming the desk."""
    message = str(exc) if isinstance(exc, ZendeskError) else f"desk {desk.name!r}: {exc}"
    try:
        with warehouse.connection() as conn:
            record_sync_result(conn, desk.desk_id, message)
    except psycopg.Error:
        pass  # the database itself is what failed; the run's failure still says why
    return dg.Failure(message, allow_retries=not isinstance(exc, ZendeskAuthError))


def _open_api(warehouse: WarehouseResource, zendesk: ZendeskClient, desk: Desk) -> ZendeskApi:
    """The desk's API session; a key that cannot decrypt its token (or a bad base URL) fails
    the sync like any other error: recorded on the desk, naming it."""
    try:
        return open_desk_api(zendesk, desk)
    except Exception as exc:
        raise _fail(warehouse, desk, exc) from None


def _request_metadata(api: ZendeskApi) -> dict:
    stats = api.stats
    return {
        "requests": sum(stats.requests.values()),
        "requests_by_endpoint": dict(stats.requests),
        "throttled_429s": stats.throttled,
        "retries": stats.retries,
        "errors": dict(stats.errors),
    }


class DeskSyncConfig(dg.Config):
    """Launchpad options of a desk sync."""

    resync: bool = Field(
        default=False,
        description="Read both exports from the beginning (as `supportflow desks resync`): the "
        "desk converges to exactly what Zendesk holds, nothing twice.",
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "zendesk_tickets",
            description="Every ticket of every desk in its latest state (raw.zendesk_tickets): "
            "indexed common columns plus raw_data, the whole API object; deleted tickets "
            "marked is_deleted. Groups from the same pages go to raw.zendesk_groups.",
            group_name="tickets",
            owners=OWNERS,
            kinds={"postgres", "python"},
            metadata={
                "dagster/column_schema": TICKET_SCHEMA,
                "dagster/table_name": "raw.zendesk_tickets",
            },
        ),
        dg.AssetSpec(
            "zendesk_users",
            description="Users sideloaded with the ticket export (raw.zendesk_users).",
            group_name="tickets",
            owners=OWNERS,
            kinds={"postgres", "python"},
            metadata={
                "dagster/column_schema": USER_SCHEMA,
                "dagster/table_name": "raw.zendesk_users",
            },
        ),
    ],
    partitions_def=DESK_PARTITIONS,
    check_specs=[
        dg.AssetCheckSpec(
            "no_duplicate_tickets",
            asset="zendesk_tickets",
            description="At most one row per (desk, ticket).",
        )
    ],
)
def zendesk_tickets(
    context: dg.AssetExecutionContext,
    config: DeskSyncConfig,
    warehouse: WarehouseResource,
    zendesk: ZendeskClient,
):
    """Incremental ticket export (with users, groups, organizations, metric sets) for a desk."""
    if config.resync:
        with warehouse.connection() as conn:
            resync_desk(conn, context.partition_key)
        context.log.info(f"desk {context.partition_key}: cursors reset, reading everything again")
    desk = _load_desk(warehouse, context.partition_key)
    with _open_api(warehouse, zendesk, desk) as api:
        try:
            stats = sync_tickets(
                warehouse.connection,
                api,
                desk,
                per_page=zendesk.page_size,
                on_page=lambda s: context.log.debug(
                    f"desk {desk.name}: page {s.pages}, {s.tickets_seen} tickets"
                ),
            )
        except Exception as exc:
            raise _fail(warehouse, desk, exc) from None
        requests = _request_metadata(api)
    context.log.info(
        f"desk {desk.name}: {stats.tickets_seen} tickets in {stats.pages} pages "
        f"({stats.inserted} new, {stats.updated} updated, {stats.deleted} deleted)"
    )
    yield dg.MaterializeResult(
        asset_key="zendesk_tickets",
        metadata={
            "desk": desk.name,
            "pages": stats.pages,
            "tickets_seen": stats.tickets_seen,
            "rows_inserted": stats.inserted,
            "rows_updated": stats.updated,
            "rows_deleted": stats.deleted,
            "older_versions_skipped": stats.skipped_older,
            "cursor": stats.cursor or "",
            **requests,
        },
    )
    yield dg.MaterializeResult(
        asset_key="zendesk_users",
        metadata={"desk": desk.name, "rows_written": stats.users_written},
    )
    with warehouse.connection() as conn:
        duplicates = conn.execute(
            """
            select count(*) from (
                select ticket_id from raw.zendesk_tickets where desk_id = %s
                group by ticket_id having count(*) > 1
            ) d
            """,
            (desk.desk_id,),
        ).fetchone()[0]
    yield dg.AssetCheckResult(
        check_name="no_duplicate_tickets",
        asset_key="zendesk_tickets",
        passed=duplicates == 0,
        metadata={"duplicate_ticket_ids": duplicates, "desk": desk.name},
    )


@dg.asset(
    key="zendesk_ticket_comments",
    deps=["zendesk_tickets"],
    partitions_def=DESK_PARTITIONS,
    group_name="tickets",
    owners=OWNERS,
    kinds={"postgres", "python"},
    description="Every comment of every desk once (raw.zendesk_ticket_comments), from the "
    "incremental ticket events export with comment events (a desk's first sync reads the oldest "
    "tickets' comments per ticket at the same time).",
    metadata={
        "dagster/column_schema": COMMENT_SCHEMA,
        "dagster/table_name": "raw.zendesk_ticket_comments",
    },
    check_specs=[
        dg.AssetCheckSpec(
            "comment_tickets_exist",
            asset="zendesk_ticket_comments",
            description="Every comment's ticket is in raw.zendesk_tickets.",
        )
    ],
)
def zendesk_ticket_comments(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, zendesk: ZendeskClient
):
    """Comments from the ticket events export; a finished run marks the desk synced."""
    desk = _load_desk(warehouse, context.partition_key)
    with _open_api(warehouse, zendesk, desk) as api:
        try:
            stats = sync_comments(
                warehouse.connection,
                api,
                desk,
                per_page=zendesk.events_page_size,
                split=SplitPolicy(
                    workers=zendesk.comment_workers,
                    min_export_pages=zendesk.split_min_export_pages,
                ),
            )
        except Exception as exc:
            raise _fail(warehouse, desk, exc) from None
        requests = _request_metadata(api)
    with warehouse.connection() as conn:
        record_sync_result(conn, desk.desk_id, None)
        orphans = conn.execute(
            """
            select count(*) from raw.zendesk_ticket_comments c
            where c.desk_id = %s and not exists (
                select 1 from raw.zendesk_tickets t
                where t.desk_id = c.desk_id and t.ticket_id = c.ticket_id)
            """,
            (desk.desk_id,),
        ).fetchone()[0]
    context.log.info(
        f"desk {desk.name}: {stats.inserted + stats.per_ticket_inserted} new comments: "
        f"{stats.inserted} from {stats.events_seen} events in {stats.pages} export pages, "
        f"{stats.per_ticket_inserted} from {stats.tickets_read} tickets read per ticket"
    )
    yield dg.MaterializeResult(
        metadata={
            "desk": desk.name,
            "pages": stats.pages,
            "events_seen": stats.events_seen,
            "rows_inserted": stats.inserted + stats.per_ticket_inserted,
            "overlap_duplicates": stats.duplicates,
            "split_at": stats.split_at if stats.split_at is not None else -1,
            "tickets_read_per_ticket": stats.tickets_read,
            "rows_inserted_per_ticket": stats.per_ticket_inserted,
            "gap_pages": stats.gap_pages,
            "cursor": stats.cursor if stats.cursor is not None else -1,
            **requests,
        }
    )
    yield dg.AssetCheckResult(
        check_name="comment_tickets_exist",
        passed=orphans == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"comments_without_ticket": orphans, "desk": desk.name},
    )


def stale_desks(conn, *, intervals: int = FRESHNESS_INTERVALS) -> list[tuple[str, str]]:
    """(desk name, why) for active desks with no finished sync within `intervals` intervals."""
    rows = conn.execute(
        """
        select name, last_synced_at,
               extract(epoch from now() - last_synced_at)::bigint, sync_interval_seconds
        from control.desks
        where active and (last_synced_at is null
            or last_synced_at < now() - make_interval(secs => sync_interval_seconds * %s))
        order by name
        """,
        (intervals,),
    ).fetchall()
    return [
        (
            name,
            "never synced" if last is None else f"last synced {age} s ago (interval {interval} s)",
        )
        for name, last, age, interval in rows
    ]


@dg.asset_check(
    asset="zendesk_tickets",
    name="desks_synced_recently",
    description=f"Every active desk finished a sync within {FRESHNESS_INTERVALS} sync intervals.",
)
def desks_synced_recently(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    with warehouse.connection() as conn:
        stale = stale_desks(conn)
    return dg.AssetCheckResult(
        passed=not stale,
        metadata={"stale_desks": dg.MetadataValue.json(dict(stale)), "count": len(stale)},
    )


# Every run of a desk carries its desk tag, however it was launched (sensor, UI, backfill): the
# run coordinator's per-desk tag limit then holds for all of them.
DESK_RUN_CONFIG = dg.PartitionedConfig(
    partitions_def=DESK_PARTITIONS,
    run_config_for_partition_key_fn=lambda desk: {},
    tags_for_partition_key_fn=lambda desk: {DESK_TAG: desk},
)

zendesk_desk_sync = dg.define_asset_job(
    DESK_SYNC_JOB,
    # the all-desks freshness check runs on its own schedule, not inside one desk's sync
    selection=dg.AssetSelection.assets(
        "zendesk_tickets", "zendesk_users", "zendesk_ticket_comments"
    )
    - dg.AssetSelection.checks(desks_synced_recently),
    config=DESK_RUN_CONFIG,
    description="Sync one desk: tickets, users and comments.",
)

desk_freshness_job = dg.define_asset_job(
    "desk_freshness_check",
    selection=dg.AssetSelection.checks(desks_synced_recently),
    description="Check that every active desk synced recently.",
)

desk_freshness_schedule = dg.ScheduleDefinition(
    job=desk_freshness_job,
    cron_schedule="*/10 * * * *",
    description="Check every 10 minutes that each active desk synced recently.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


defs = dg.Definitions(
    assets=[zendesk_tickets, zendesk_ticket_comments],
    asset_checks=[desks_synced_recently],
    jobs=[zendesk_desk_sync, desk_freshness_job],
    schedules=[desk_freshness_schedule],
)

"""Housekeeping of the foundation's own tables, on a daily schedule."""

import dagster as dg

from resources.queues import ACK_LEDGER_DAYS, prune_acknowledged_ids
from resources.rejected import REJECTED_INPUT_DAYS, prune_rejected_input
from resources.warehouse import WarehouseResource


class QueueLedgerConfig(dg.Config):
    keep_days: int = ACK_LEDGER_DAYS


@dg.op(description="Forget acknowledged message ids older than `keep_days` (control.queue_acks).")
def prune_queue_ack_ledger(
    context: dg.OpExecutionContext, config: QueueLedgerConfig, warehouse: WarehouseResource
) -> int:
    with warehouse.connection() as conn:
        removed = prune_acknowledged_ids(conn, config.keep_days)
    context.log.info(f"forgot {removed} acknowledged id(s) older than {config.keep_days} days")
    return removed


class RejectedInputConfig(dg.Config):
    keep_days: int = REJECTED_INPUT_DAYS


@dg.op(
    description="Forget refused webhook bodies older than `keep_days` (control.rejected_input): "
    "they may hold personal data."
)
def prune_rejected_webhook_input(
    context: dg.OpExecutionContext, config: RejectedInputConfig, warehouse: WarehouseResource
) -> int:
    with warehouse.connection() as conn:
        removed = prune_rejected_input(conn, config.keep_days)
    context.log.info(f"forgot {removed} refused input(s) older than {config.keep_days} days")
    return removed


@dg.job(description="Daily housekeeping of the queue tables.", tags={"supportflow/domain": "core"})
def queue_maintenance() -> None:
    prune_queue_ack_ledger()
    prune_rejected_webhook_input()


queue_maintenance_daily = dg.ScheduleDefinition(
    name="queue_maintenance_daily",
    job=queue_maintenance,
    cron_schedule="50 2 * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Prunes the acknowledged-id ledger and refused webhook input every night.",
)

defs = dg.Definitions(jobs=[queue_maintenance], schedules=[queue_maintenance_daily])

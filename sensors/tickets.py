"""The desk sync sensor: keeps the `desks` partitions in step with `control.desks` and launches
a `zendesk_desk_sync` run for every active desk whose sync interval has passed.

Run keys are per desk and time slot (`<desk>:<slot>`, slot = now // interval), so one tick never
launches a desk twice and a failed run is retried in the next slot. Runs carry the desk tag: the
run coordinator's tag limit runs at most one per desk, and the sensor skips a desk while one is
in progress. A run that stopped making progress (no page committed for `stuck_after` seconds,
e.g. its worker was killed) is marked failed so it no longer blocks the desk.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from assets.tickets.defs import DESK_PARTITIONS, zendesk_desk_sync
from assets.tickets.rules import DESK_TAG
from resources.warehouse import WarehouseResource
from sensors.runs import IN_PROGRESS_STATUSES

MIN_STUCK_SECONDS = 1800


@dataclass(frozen=True)
class DeskState:
    name: str
    active: bool
    sync_interval_seconds: int
    last_synced_at: datetime | None
    last_progress_at: datetime  # control.desks.updated_at: moves with every committed page


def sync_slot(now: datetime, interval_seconds: int) -> int:
    return int(now.timestamp()) // interval_seconds


def is_due(desk: DeskState, now: datetime) -> bool:
    """Active and never synced, or the last finished sync is at least one interval old."""
    if not desk.active:
        return False
    if desk.last_synced_at is None:
        return True
    return (now - desk.last_synced_at).total_seconds() >= desk.sync_interval_seconds


def stuck_after_seconds(desk: DeskState) -> int:
    return max(MIN_STUCK_SECONDS, 3 * desk.sync_interval_seconds)


def is_stuck(desk: DeskState, run_started: datetime, now: datetime) -> bool:
    """A run is stuck when neither it nor the desk has moved for `stuck_after_seconds`."""
    latest = max(run_started, desk.last_progress_at)
    return (now - latest).total_seconds() >= stuck_after_seconds(desk)


def read_desks(warehouse: WarehouseResource) -> list[DeskState]:
    with warehouse.connection() as conn:
        rows = conn.execute(
            "select name, active, sync_interval_seconds, last_synced_at, updated_at "
            "from control.desks order by name"
        ).fetchall()
    return [DeskState(*row) for row in rows]


@dg.sensor(
    name="desk_sync_sensor",
    job=zendesk_desk_sync,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps desk partitions in step with control.desks and launches due desk syncs.",
)
def desk_sync_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    now = datetime.now(UTC)
    desks = read_desks(warehouse)
    instance = context.instance
    known = set(instance.get_dynamic_partitions(DESK_PARTITIONS.name))
    names = {d.name for d in desks}
    partition_requests = []
    if names - known:
        partition_requests.append(
            dg.AddDynamicPartitionsRequest(DESK_PARTITIONS.name, sorted(names - known))
        )
    if known - names:
        partition_requests.append(
            dg.DeleteDynamicPartitionsRequest(DESK_PARTITIONS.name, sorted(known - names))
        )

    run_requests = []
    skipped = []
    for desk in desks:
        if not is_due(desk, now):
            continue
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                job_name=zendesk_desk_sync.name,
                tags={DESK_TAG: desk.name},
                statuses=IN_PROGRESS_STATUSES,
            ),
            limit=5,
        )
        blocking = []
        for record in records:
            started = record.start_time or record.create_timestamp.timestamp()
            if is_stuck(desk, datetime.fromtimestamp(started, UTC), now):
                instance.report_run_failed(
                    record.dagster_run,
                    f"desk {desk.name}: no progress for {stuck_after_seconds(desk)} s; "
                    "marked failed by desk_sync_sensor so the desk can sync again",
                )
                context.log.warning(f"desk {desk.name}: run {record.dagster_run.run_id} stuck")
            else:
                blocking.append(record.dagster_run.run_id)
        if blocking:
            skipped.append(f"{desk.name} (run {blocking[0][:8]} in progress)")
            continue
        slot = sync_slot(now, desk.sync_interval_seconds)
        suffix = f":after-{records[0].dagster_run.run_id[:8]}" if records else ""
        run_requests.append(
            dg.RunRequest(
                run_key=f"{desk.name}:{slot}{suffix}",
                partition_key=desk.name,
                tags={DESK_TAG: desk.name},
            )
        )
    if not run_requests and not partition_requests:
        reason = "no desk is due" + (f"; in progress: {', '.join(skipped)}" if skipped else "")
        return dg.SkipReason(reason)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=partition_requests,
        skip_reason=None if run_requests else "no desk is due",
    )


defs = dg.Definitions(sensors=[desk_sync_sensor])

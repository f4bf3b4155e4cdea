"""Queue sensors: look at a queue's depth and launch one drain run at a time.

Sensors never carry message bodies: the run receives, commits, then acknowledges. A drain job
is tagged `supportflow/queue=<queue>`; the sensor skips while a run with that tag is queued or
in progress (and the run coordinator's tag limit backs that up).
"""

from __future__ import annotations

import dagster as dg

from resources.queues import QUEUE_TAG, QueueResource
from sensors.runs import runs_in_progress


def drain_in_progress(instance: dg.DagsterInstance, queue: str) -> bool:
    return bool(runs_in_progress(instance, {QUEUE_TAG: queue}))


def queue_drain_sensor(
    *,
    name: str,
    queue: str,
    job: dg.JobDefinition | dg.UnresolvedAssetJobDefinition,
    description: str,
    minimum_interval_seconds: int = 15,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    run_config: dict | None = None,
) -> dg.SensorDefinition:
    """A sensor that launches `job` when `queue` has visible messages and no drain run for it is
    in progress."""

    @dg.sensor(
        name=name,
        job=job,
        description=description,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
    )
    def _sensor(context: dg.SensorEvaluationContext, queues: QueueResource):
        depth = queues.depth(queue)
        if depth == 0:
            return dg.SkipReason(f"queue {queue} is empty")
        if drain_in_progress(context.instance, queue):
            return dg.SkipReason(
                f"a drain run for {queue} is already in progress ({depth} waiting)"
            )
        serial = int(context.cursor or 0) + 1
        context.update_cursor(str(serial))
        return dg.RunRequest(
            run_key=f"{queue}:{serial}",
            run_config=run_config or {},
            tags={QUEUE_TAG: queue, "supportflow/queue_depth": str(depth)},
        )

    return _sensor

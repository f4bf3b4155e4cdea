"""A tiny code location for the production-instance test: a desk-tagged job that holds its desk
until the test releases it, so the test (not a sleep) decides when each run ends, and runs that
overlap show it in their start and end times.

Runs are launched for a desk partition, as the UI launches them: their desk tag comes from the
desk sync's own partitioned config, not from the test. The op marks `<hold dir>/<run id>.started`
and waits for `<hold dir>/<run id>.release`; the hold directory comes in the run's tags."""

import time
from pathlib import Path

import dagster as dg

from assets.tickets.defs import DESK_RUN_CONFIG

HOLD_DIR_TAG = "supportflow-test/hold-dir"


@dg.op
def hold_the_desk(context: dg.OpExecutionContext) -> None:
    context.log.info("syncing desk %s", context.run.tags.get("supportflow/desk"))
    hold_dir = Path(context.run.tags[HOLD_DIR_TAG])
    (hold_dir / f"{context.run_id}.started").touch()
    release = hold_dir / f"{context.run_id}.release"
    deadline = time.monotonic() + 180  # a test that died never releases: give up eventually
    while not release.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the test never released the desk")
        time.sleep(0.05)


# in process: one Python start-up per run, not one more per step; partitioned by desk with the
# real desk sync's partitioned config, so a run launched for a partition (as the UI launches
# one) gets its desk tag the same way
@dg.job(executor_def=dg.in_process_executor, config=DESK_RUN_CONFIG)
def desk_sync_stand_in():
    hold_the_desk()


defs = dg.Definitions(jobs=[desk_sync_stand_in])

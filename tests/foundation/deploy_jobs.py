"""A tiny code location for the production-instance test: a desk-tagged job that takes a
couple of seconds, so overlapping runs would show in their start and end times."""

import time

import dagster as dg


@dg.op
def hold_the_desk(context: dg.OpExecutionContext) -> None:
    context.log.info("syncing desk %s", context.run.tags.get("supportflow/desk"))
    time.sleep(2)


# in process: one Python start-up per run, not one more per step
@dg.job(executor_def=dg.in_process_executor)
def desk_sync_stand_in():
    hold_the_desk()


defs = dg.Definitions(jobs=[desk_sync_stand_in])

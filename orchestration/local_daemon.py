"""The Dagster daemon's own steps, taken one at a time in this process: for the demo.

The demo cannot wait for cron times and sensor intervals, nor start a run worker process per run
(each imports the code location, several seconds of CPU) and still finish in a minute. So it
loads the code location into a workspace, as the daemon does, under its UI name
(`orchestration.definitions`, what `supportflow dev` serves), and then takes the daemon's steps
with Dagster's own daemon code: a sensor tick (`dagster._daemon.sensor`), a schedule tick
(`dagster._scheduler.scheduler`), the backfill daemon's iterations (`dagster._daemon.backfill`)
on an asset backfill added to the instance. Runs are therefore created exactly as the daemon
creates them: with the code location's job origin, their sensor, schedule or backfill tags, tick
records, cursors, partitions; the UI shows them on their jobs' and launchers' pages, in the
Overview timeline and the Backfills tab.

The one difference is where a run executes: the instance used here submits runs straight to
`InProcessRunLauncher`, which executes them in this process with the in-process executor (what
`execute_in_process` does), instead of queueing them for a run worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._config.config_schema import UserConfigSchema
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.partitions.context import partition_loading_context
from dagster._core.execution.api import execute_run
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import LaunchRunContext, RunLauncher
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
    TickData,
    TickStatus,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.backfill import execute_backfill_iteration
from dagster._daemon.sensor import (
    SensorLaunchContext,
    _evaluate_sensor,
    _get_evaluation_tick,
    mark_sensor_state_for_tick,
)
from dagster._scheduler.scheduler import _schedule_runs_at_time, _ScheduleLaunchContext
from dagster._serdes import ConfigurableClass, ConfigurableClassData
from dagster._time import get_current_datetime, get_current_timestamp

CODE_LOCATION_MODULE = "orchestration.definitions"
# the name `dagster-webserver -m orchestration.definitions` gives the location (supportflow dev):
# runs carry it in their origin, and the UI finds a run's job by it
LOCATION_NAME = CODE_LOCATION_MODULE
BACKFILL_TIMEOUT_SECONDS = 600.0

# The daemon's code logs its progress here; a failure comes back to the demo as an exception
# naming the sensor, schedule or backfill, so nothing is printed.
logger = logging.getLogger("supportflow.local_daemon")
logger.addHandler(logging.NullHandler())


class InProcessRunLauncher(RunLauncher, ConfigurableClass):
    """Executes a launched run here and now, with the in-process executor; the run, its events
    and its origin are recorded as usual."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> InProcessRunLauncher:
        return cls(inst_data=inst_data)

    def launch_run(self, context: LaunchRunContext) -> None:
        from orchestration.definitions import defs  # on purpose: the code location, loaded once

        run = context.dagster_run
        job = defs.get_repository_def().get_job(run.job_name)
        job = job.as_ephemeral_job(resource_defs={}, input_values={})
        execute_run(InMemoryJob(job), run, self._instance)

    def terminate(self, run_id: str) -> bool:
        return False  # a run here ends with the call that launched it


def demo_instance(dagster_home: Path) -> dg.DagsterInstance:
    """The instance of `dagster_home` (its storage), submitting runs to `InProcessRunLauncher`
    at once rather than queueing them for the daemon."""
    ref = InstanceRef.from_dir(str(dagster_home))
    ref = ref._replace(
        run_coordinator_data=ConfigurableClassData(
            "dagster._core.run_coordinator.sync_in_memory_run_coordinator",
            "SyncInMemoryRunCoordinator",
            "{}",
        ),
        run_launcher_data=ConfigurableClassData(__name__, "InProcessRunLauncher", "{}"),
        # the runs' console logger: warnings and errors only (the demo prints its own progress)
        settings={**ref.settings, "python_logs": {"python_log_level": "WARNING"}},
    )
    return dg.DagsterInstance.from_ref(ref)


@contextmanager
def code_location_workspace(
    instance: dg.DagsterInstance, working_directory: Path
) -> Iterator[WorkspaceProcessContext]:
    """The code location loaded in this process, under the name the UI gives it."""
    import sys

    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=CODE_LOCATION_MODULE,
            working_directory=str(working_directory),
        ),
        location_name=LOCATION_NAME,
    )
    with WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin)) as context:
        yield context


class LocalDaemon:
    """Sensor ticks, schedule ticks and backfills of the code location, as the daemon takes them."""

    def __init__(self, workspace: WorkspaceProcessContext):
        self.workspace = workspace
        self.instance = workspace.instance

    def _repository(self) -> Any:
        location = self.workspace.create_request_context().get_code_location(LOCATION_NAME)
        (repository,) = location.get_repositories().values()
        return repository

    def runs(self, run_ids: Sequence[str]) -> list[DagsterRun]:
        return [run for run_id in run_ids if (run := self.instance.get_run_by_id(run_id))]

    def tick_sensor(self, name: str) -> list[DagsterRun]:
        """One tick of sensor `name` now, whatever its minimum interval: evaluated through the
        code location, its cursor, partition requests and run requests applied and its runs
        launched by the daemon's code; returns the runs it launched."""
        sensor = self._repository().get_sensor(name)
        state = self.instance.get_instigator_state(
            sensor.get_remote_origin_id(), sensor.selector_id
        )
        if state is None:  # never ticked: declared running in code, as the daemon records it
            state = InstigatorState(
                sensor.get_remote_origin(),
                InstigatorType.SENSOR,
                InstigatorStatus.DECLARED_IN_CODE,
                SensorInstigatorData(
                    min_interval=sensor.min_interval_seconds,
                    last_sensor_start_timestamp=get_current_timestamp(),
                    sensor_type=sensor.sensor_type,
                ),
            )
            self.instance.add_instigator_state(state)
        mark_sensor_state_for_tick(self.instance, sensor, state, get_current_datetime())
        state = self.instance.get_instigator_state(
            sensor.get_remote_origin_id(), sensor.selector_id
        )
        tick = _get_evaluation_tick(
            self.instance, sensor, state.instigator_data, get_current_timestamp(), logger
        )
        retention = self.instance.get_tick_retention_settings(InstigatorType.SENSOR)
        context = SensorLaunchContext(sensor, tick, self.instance, logger, retention)
        with context:  # on an error it records the tick as failed
            context.add_log_key(context.log_key)
            with partition_loading_context(dynamic_partitions_store=self.instance):
                for _ in _evaluate_sensor(self.workspace, context, sensor, state, None):
                    pass
        tick = context.tick
        if tick.status == TickStatus.FAILURE:
            raise RuntimeError(f"sensor {name} failed: {tick.error.message if tick.error else ''}")
        return self.runs(tick.run_ids)

    def tick_schedule(self, name: str) -> list[DagsterRun]:
        """A tick of schedule `name` for this moment, as the scheduler takes one at a cron time:
        its run requests submitted and launched; returns the runs."""
        schedule = self._repository().get_schedule(name)
        now = get_current_datetime()
        tick = self.instance.create_tick(
            TickData(
                instigator_origin_id=schedule.get_remote_origin_id(),
                instigator_name=name,
                instigator_type=InstigatorType.SCHEDULE,
                status=TickStatus.STARTED,
                timestamp=now.timestamp(),
                selector_id=schedule.selector_id,
            )
        )
        retention = self.instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
        context = _ScheduleLaunchContext(schedule, tick, self.instance, logger, retention)
        with context:
            context.add_log_key(context.log_key)
            for error in _schedule_runs_at_time(
                self.workspace,
                logger,
                schedule,
                now,
                schedule.execution_timezone or "UTC",
                context,
                None,
            ):
                if error is not None and hasattr(error, "message"):
                    context.update_state(TickStatus.FAILURE, error=error)
                    raise RuntimeError(f"schedule {name} failed: {error.message}")
        return self.runs(context._tick.run_ids)  # the tick as written when the context closed

    def backfill(
        self, assets: Sequence[dg.AssetKey], partition_keys: Sequence[str], title: str
    ) -> str:
        """An asset backfill of `assets` over `partition_keys` (what the UI's "Materialize
        selected" on a range launches), processed by the backfill daemon's iterations until it
        is done; returns its id."""
        from dagster._core.utils import make_new_backfill_id

        request_context = self.workspace.create_request_context()
        backfill = PartitionBackfill.from_asset_partitions(
            backfill_id=make_new_backfill_id(),
            asset_graph=request_context.asset_graph,
            partition_names=list(partition_keys),
            asset_selection=list(assets),
            backfill_timestamp=get_current_timestamp(),
            tags={},
            dynamic_partitions_store=self.instance,
            all_partitions=False,
            title=title,
            description=None,
            run_config=None,
        )
        self.instance.add_backfill(backfill)
        deadline = time.monotonic() + BACKFILL_TIMEOUT_SECONDS
        while True:
            for error in execute_backfill_iteration(self.workspace, logger):
                if error is not None:
                    raise RuntimeError(f"backfill {title} failed: {error.message}")
            status = self.instance.get_backfill(backfill.backfill_id).status
            if status != BulkActionStatus.REQUESTED:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"backfill {title} still running after {deadline:.0f}s")
        if status != BulkActionStatus.COMPLETED_SUCCESS:
            raise RuntimeError(f"backfill {title} ended {status.value}")
        return backfill.backfill_id

    def backfill_runs(self, backfill_id: str) -> list[DagsterRun]:
        return list(self.instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id})))

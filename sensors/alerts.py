"""Run-failure alerts: every failed run of the code location raises an operator alert.

The alert goes through the `alerts` resource (log + `control.alerts`, SNS when configured), so
an operator hears about a failed sync or drain even when nobody has the Dagster UI open.
"""

from __future__ import annotations

import dagster as dg

from resources.alerts import AlertsResource

MAX_ERROR_CHARS = 2000


def run_failure_details(run: dg.DagsterRun, error: str | None) -> dict:
    """What an operator needs to find the run: ids, supportflow tags, retry number, error."""
    tags = {
        key: value
        for key, value in run.tags.items()
        if key.startswith("supportflow/") or key in ("dagster/retry_number", "dagster/partition")
    }
    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "tags": tags,
        "error": (error or "")[:MAX_ERROR_CHARS],
    }


@dg.run_failure_sensor(
    name="alert_on_run_failure",
    description="Raises an alert (log, control.alerts, SNS when configured) for every failed run.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def alert_on_run_failure(context: dg.RunFailureSensorContext, alerts: AlertsResource) -> None:
    run = context.dagster_run
    error = context.failure_event.message if context.failure_event else None
    alerts.raise_alert(
        f"run:{run.job_name}",
        f"run {run.run_id} of job {run.job_name} failed",
        run_failure_details(run, error),
    )


defs = dg.Definitions(sensors=[alert_on_run_failure])

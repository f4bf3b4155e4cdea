"""What sensors ask the Dagster instance about runs: which ones still hold a slot."""

from __future__ import annotations

import dagster as dg

# Run statuses that still hold a desk's or a queue's slot.
IN_PROGRESS_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def runs_in_progress(
    instance: dg.DagsterInstance,
    tags: dict[str, str],
    limit: int = 1,
    job_name: str | None = None,
) -> list[dg.RunRecord]:
    """Runs (of `job_name`, if given) with all of `tags` that are queued or running."""
    return list(
        instance.get_run_records(
            filters=dg.RunsFilter(job_name=job_name, tags=tags, statuses=IN_PROGRESS_STATUSES),
            limit=limit,
        )
    )

"""What sensors ask the Dagster instance about runs: which ones still hold a slot, and the
runs that bring daily partitions up to date after their data changed."""

from __future__ import annotations

from datetime import date, datetime

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


def changed_day_requests(
    instance: dg.DagsterInstance,
    job_name: str,
    changed: list[tuple[date, datetime]],
    first_day: date,
    today: date,
    run_key_prefix: str,
    tags: dict[str, str],
) -> list[dg.RunRequest]:
    """One run of `job_name` per changed day that has a partition (`first_day` .. yesterday) and
    no run of it queued or running. The run key names the change (`prefix:day:changed_at`), so
    each change runs once and a later change again."""
    return [
        dg.RunRequest(
            run_key=f"{run_key_prefix}:{day.isoformat()}:{changed_at.timestamp():.6f}",
            partition_key=day.isoformat(),
            tags=tags,
        )
        for day, changed_at in changed
        if first_day <= day < today
        and not runs_in_progress(
            instance, {"dagster/partition": day.isoformat()}, job_name=job_name
        )
    ]

"""The local Dagster instance: `$SUPPORTFLOW_HOME/dagster/dagster.yaml` on PostgreSQL.

SQLite storage locks under concurrent runs, so even on one machine the instance keeps runs,
events and schedules in database `dagster` of the warehouse server. Runs go through the queued
coordinator so per-desk tag limits hold locally as they do in production.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from assets.tickets.rules import DESK_TAG
from resources.queues import QUEUE_TAG
from resources.settings import Settings, set_process_environ
from resources.warehouse import resolve_dagster_storage_url

# The global limit keeps two cores usable; desks and queues get one run at a time each.
LOCAL_MAX_CONCURRENT_RUNS = 4


def sqlalchemy_postgres_url(url: str) -> str:
    """Pin dagster-postgres to psycopg2: SQLAlchemy 2.1 maps plain `postgresql://` to psycopg 3,
    whose server-side parameters break dagster-postgres' `NOTIFY run_events, :notify_id`."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url.removeprefix(scheme)
    return url


def instance_config(storage_url: str) -> dict:
    return {
        "storage": {"postgres": {"postgres_url": sqlalchemy_postgres_url(storage_url)}},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": LOCAL_MAX_CONCURRENT_RUNS,
                "tag_concurrency_limits": [
                    {"key": DESK_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
                    {
                        "key": QUEUE_TAG,
                        "value": {"applyLimitPerUniqueValue": True},
                        "limit": 1,
                    },
                ],
            },
        },
        "run_retries": {"enabled": True, "max_retries": 2},
        "telemetry": {"enabled": False},
        "nux": {"enabled": False},
    }


def write_instance(settings: Settings) -> Path:
    """Write dagster.yaml (idempotent) and point DAGSTER_HOME at it for this process."""
    dagster_home = settings.dagster_home
    dagster_home.mkdir(parents=True, exist_ok=True)
    storage_url = resolve_dagster_storage_url(settings.database_url, Path(settings.home))
    text = yaml.safe_dump(instance_config(storage_url), sort_keys=False)
    target = dagster_home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        tmp = target.with_suffix(".yaml.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    set_process_environ({"DAGSTER_HOME": str(dagster_home)})
    return target

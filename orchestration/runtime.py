"""Wiring shared by the code location, the CLI and the webhook service: settings -> resources.

`build_resources` is the one place resources are configured. Secret-bearing values are given as
`dg.EnvVar` so the Dagster UI shows the variable's name, never its value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg

from orchestration.settings import Settings
from resources.alerts import AlertsResource
from resources.queues import PostgresQueues, QueueResource
from resources.storage import ExportStorage
from resources.warehouse import WarehouseResource, ensure_ready


def _env_or_value(name: str, value: str | None) -> Any:
    """An EnvVar when the variable is set (keeps secrets out of the UI), else the plain value."""
    return dg.EnvVar(name) if os.environ.get(name) else (value or "")


def make_queues(settings: Settings, *, for_dagster: bool = False) -> QueueResource:
    database_url = (
        _env_or_value("SUPPORTFLOW_DATABASE_URL", settings.database_url)
        if for_dagster
        else settings.database_url or ""
    )
    if settings.queue_backend == "sqs":
        from resources.sqs import SqsQueues

        # The ack ledger (control.queue_acks) lives in the warehouse with either backend.
        return SqsQueues(
            prefix=settings.sqs_prefix,
            endpoint_url=settings.aws_endpoint_url or "",
            database_url=database_url,
            home=str(settings.home),
        )
    return PostgresQueues(database_url=database_url, home=str(settings.home))


def build_resources(settings: Settings, *, for_dagster: bool = True) -> dict[str, Any]:
    """The resources every asset, sensor and job may ask for, by name."""
    database_url = (
        _env_or_value("SUPPORTFLOW_DATABASE_URL", settings.database_url)
        if for_dagster
        else settings.database_url or ""
    )
    home = str(settings.home)
    return {
        "warehouse": WarehouseResource(database_url=database_url, home=home),
        "queues": make_queues(settings, for_dagster=for_dagster),
        "alerts": AlertsResource(
            database_url=database_url,
            home=home,
            sns_topic_arn=settings.alert_sns_topic_arn or "",
            aws_endpoint_url=settings.aws_endpoint_url or "",
        ),
        "export_storage": ExportStorage(
            export_url=settings.export_url, aws_endpoint_url=settings.aws_endpoint_url or ""
        ),
    }


def warehouse_url(settings: Settings) -> str:
    """Start the embedded server if needed, migrate, and return the warehouse URL."""
    return ensure_ready(settings.database_url, Path(settings.home))

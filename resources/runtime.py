"""Settings -> resources: the one function that builds the platform's resources.

The code location, the CLI, the webhook service and the tests all call `build_resources`.
Values that came from the environment are given to Dagster as `dg.EnvVar` (see
`Settings.for_dagster`), so the Dagster UI shows a variable's name, never its value. Resources
that need the warehouse take it as a nested resource.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from resources.alerts import AlertsResource
from resources.discourse import DiscourseClient
from resources.queues import PostgresQueues, QueueResource
from resources.settings import Settings
from resources.sqs import SqsQueues
from resources.warehouse import WarehouseResource, ensure_ready
from resources.zendesk import ZendeskClient

if TYPE_CHECKING:
    from resources.storage import ExportStorage


def make_warehouse(
    settings: Settings, *, for_dagster: bool = False, pool_timeout_seconds: float | None = None
) -> WarehouseResource:
    database_url = (
        settings.for_dagster("SUPPORTFLOW_DATABASE_URL", settings.database_url)
        if for_dagster
        else settings.database_url or ""
    )
    extra = {} if pool_timeout_seconds is None else {"pool_timeout_seconds": pool_timeout_seconds}
    return WarehouseResource(database_url=database_url, home=str(settings.home), **extra)


def make_queues(
    settings: Settings, *, for_dagster: bool = False, pool_timeout_seconds: float | None = None
) -> QueueResource:
    warehouse = make_warehouse(
        settings, for_dagster=for_dagster, pool_timeout_seconds=pool_timeout_seconds
    )
    if settings.queue_backend == "sqs":
        # The ack ledger (control.queue_acks) lives in the warehouse with either backend.
        return SqsQueues(
            prefix=settings.sqs_prefix,
            endpoint_url=settings.aws_endpoint_url or "",
            warehouse=warehouse,
            wait_time_seconds=settings.sqs_wait_seconds,
        )
    return PostgresQueues(warehouse=warehouse)


def make_export_storage(settings: Settings) -> ExportStorage:
    """The export storage of `SUPPORTFLOW_EXPORT_URL`; on S3 through dagster-aws's S3Resource
    (at `AWS_ENDPOINT_URL` when set; region and credentials from the standard AWS chain)."""
    # dagster-aws adds over a second of imports, which the quick CLI commands that need only the
    # warehouse or the queues (`db url`, `queue stats`) should not pay: imported here on purpose
    from dagster_aws.s3 import S3Resource

    from resources.storage import ExportStorage

    return ExportStorage(
        export_url=settings.export_url, s3=S3Resource(endpoint_url=settings.aws_endpoint_url)
    )


def build_resources(
    settings: Settings, *, for_dagster: bool = True, pool_timeout_seconds: float | None = None
) -> dict[str, Any]:
    """The resources every asset, sensor and job may ask for, by name. `pool_timeout_seconds`
    (default 30) bounds the wait for a warehouse connection (the webhook service: a few)."""
    warehouse = make_warehouse(
        settings, for_dagster=for_dagster, pool_timeout_seconds=pool_timeout_seconds
    )
    home = str(settings.home)
    secret_key = (
        settings.for_dagster("SUPPORTFLOW_SECRET_KEY", settings.secret_key)
        if for_dagster
        else settings.secret_key or ""
    )
    return {
        "warehouse": warehouse,
        "queues": make_queues(
            settings, for_dagster=for_dagster, pool_timeout_seconds=pool_timeout_seconds
        ),
        "alerts": AlertsResource(
            warehouse=warehouse,
            sns_topic_arn=settings.alert_sns_topic_arn or "",
            aws_endpoint_url=settings.aws_endpoint_url or "",
        ),
        "export_storage": make_export_storage(settings),
        "zendesk": ZendeskClient(home=home, secret_key=secret_key),
        "discourse": DiscourseClient(home=home, secret_key=secret_key),
    }


def warehouse_url(settings: Settings) -> str:
    """Start the embedded server if needed, migrate, and return the warehouse URL."""
    return ensure_ready(settings.database_url, Path(settings.home))

"""The analyst layer: the dbt project in `dbt_project/` loaded as Dagster assets.

Every dbt model is an asset in group `analytics`; the dbt sources point at the raw-table assets
(`meta.dagster.asset_key`), so the graph shows raw -> staging -> marts, and every dbt test is an
asset check on its model. dbt connects with the environment variables `dbt_project/profiles.yml`
reads, set here from the warehouse URL just before dbt runs.

The definitions are built from the manifest `assets/analytics/project.py` has dagster-dbt
prepare (see there).
"""

import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field

from assets.analytics.project import dbt_project
from resources.partitions import fresh_within
from resources.settings import set_process_environ
from resources.warehouse import WarehouseResource


def dbt_env(warehouse_url: str) -> dict[str, str]:
    """The SUPPORTFLOW_DBT_* variables profiles.yml reads, from a libpq URL or conninfo.

    A unix socket (the embedded server) is a directory in `host`; libpq and dbt accept that as
    the host. An absent port means PostgreSQL's default 5432, for sockets too (.s.PGSQL.5432).
    """
    params = conninfo_to_dict(warehouse_url)
    env = {
        "SUPPORTFLOW_DBT_HOST": str(params.get("host") or "localhost"),
        "SUPPORTFLOW_DBT_PORT": str(params.get("port") or 5432),
        "SUPPORTFLOW_DBT_USER": str(params.get("user") or "postgres"),
        "SUPPORTFLOW_DBT_PASSWORD": str(params.get("password") or ""),
        "SUPPORTFLOW_DBT_DBNAME": str(params.get("dbname") or "postgres"),
        "SUPPORTFLOW_DBT_SSLMODE": str(params.get("sslmode") or "prefer"),
    }
    if "," in env["SUPPORTFLOW_DBT_HOST"]:
        raise ValueError("dbt needs a single warehouse host; the URL lists several")
    return env


def _dbt_executable() -> str:
    """The dbt next to this interpreter (the venv's), so an unactivated venv works too."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def keep_partial_parse(run_target: Path, project: DbtProject) -> None:
    """Keep a build's parse state where dagster-dbt looks for it, so the next build (same
    connection settings) parses only what changed instead of the whole project."""
    source = run_target / "partial_parse.msgpack"
    if not source.exists():
        return
    destination = project.project_dir / project.target_path / "partial_parse.msgpack"
    scratch = destination.with_name(f".partial_parse.{os.getpid()}.msgpack")
    shutil.copyfile(source, scratch)
    os.replace(scratch, destination)


HOURLY_FRESHNESS = fresh_within(timedelta(hours=1))


class SupportflowDbtTranslator(DagsterDbtTranslator):
    """dbt models as supportflow assets. Group and owners come from dbt_project.yml's meta and
    the raw-table asset keys from sources.yml (the default translator reads both); this adds a
    `supportflow/layer` tag (staging | mart) to filter on in the UI."""

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        tags = dict(super().get_tags(dbt_resource_props))
        layer = "mart" if "marts" in dbt_resource_props.get("fqn", []) else "staging"
        return {**tags, "supportflow/layer": layer}

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: Any) -> Any:
        """Models are rebuilt hourly (analytics_marts_hourly): stale after a missed build."""
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("model."):
            return spec.replace_attributes(freshness_policy=HOURLY_FRESHNESS)
        return spec


# Some pipeline assets write several raw tables (conversation_tickets: the tickets and their
# state log), so more than one dbt source names the same asset.
dbt_translator = SupportflowDbtTranslator(
    settings=DagsterDbtTranslatorSettings(enable_duplicate_source_asset_keys=True)
)


class AnalyticsBuildConfig(dg.Config):
    """Run config of a dbt build: the moment "now" means for the time-windowed marts."""

    as_of: str | None = Field(
        default=None,
        description=(
            "ISO 8601 timestamp with a UTC offset (e.g. 2026-11-29T12:00:00+00:00) that time "
            "windows such as template_delivery_7d's 'last 7 days plus today' end at; "
            "empty: the build's own time"
        ),
    )


def dbt_vars(config: AnalyticsBuildConfig) -> list[str]:
    """`--vars` for dbt from the run config (none when the build uses its own time)."""
    if not config.as_of:
        return []
    try:
        moment = datetime.fromisoformat(config.as_of)
    except ValueError:
        raise dg.Failure(f"as_of: not an ISO 8601 timestamp: {config.as_of!r}") from None
    if moment.tzinfo is None:
        raise dg.Failure(f"as_of: needs a UTC offset (e.g. +00:00): {config.as_of!r}")
    return ["--vars", json.dumps({"as_of": moment.isoformat()})]


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=dbt_translator,
    name="analytics_dbt_models",
)
def analytics_dbt_models(
    context: dg.AssetExecutionContext,
    config: AnalyticsBuildConfig,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
) -> Iterator[Any]:
    """`dbt build` of the selected models: run them, then their tests (reported as asset checks)."""
    set_process_environ(dbt_env(warehouse.url))
    invocation = dbt.cli(["build", *dbt_vars(config)], context=context)
    yield from invocation.stream()
    keep_partial_parse(Path(invocation.target_path), dbt_project)


analytics_job = dg.define_asset_job(
    name="analytics_dbt_build",
    selection=dg.AssetSelection.assets(analytics_dbt_models),
    description="Rebuild every dbt model (staging views, analytics marts) and run the dbt tests.",
)

analytics_hourly_schedule = dg.ScheduleDefinition(
    name="analytics_marts_hourly",
    job=analytics_job,
    cron_schedule="25 * * * *",
    execution_timezone="UTC",
    description="Refresh the analytics marts (dbt build with tests) at 25 past every hour.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


def dbt_resource() -> DbtCliResource:
    """The dbt CLI resource over this project (resource key `dbt`)."""
    return DbtCliResource(project_dir=dbt_project, dbt_executable=_dbt_executable())


defs = dg.Definitions(
    assets=[analytics_dbt_models],
    jobs=[analytics_job],
    schedules=[analytics_hourly_schedule],
    resources={"dbt": dbt_resource()},
)

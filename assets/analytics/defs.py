"""The analyst layer: the dbt project in `dbt_project/` loaded as Dagster assets.

Every dbt model is an asset in group `analytics`; the dbt sources point at the raw-table assets
(`meta.dagster.asset_key`), so the graph shows raw -> staging -> marts, and every dbt test is an
asset check on its model. dbt connects with the environment variables `dbt_project/profiles.yml`
reads, set here from the warehouse URL just before dbt runs.

The manifest (`dbt_project/target/manifest.json`) is needed to build the definitions. On a fresh
clone, or after a model changed, `ensure_manifest` runs `dbt parse` once at load, under a file
lock, and swaps the new manifest in atomically, so processes that load the code location at the
same time neither parse twice nor read a half-written file.
"""

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets
from filelock import FileLock
from psycopg.conninfo import conninfo_to_dict

from resources.settings import set_process_environ
from resources.warehouse import WarehouseResource


def _find_dbt_project() -> Path:
    """The checkout's dbt_project/, or the working directory's when supportflow runs installed
    into site-packages (the container image copies the project next to the code)."""
    beside_code = Path(__file__).resolve().parent.parent / "dbt_project"
    in_cwd = Path.cwd() / "dbt_project"
    return beside_code if beside_code.is_dir() or not in_cwd.is_dir() else in_cwd


DBT_PROJECT_DIR = _find_dbt_project()
# Files whose change makes the manifest stale (everything dbt parses).
_PARSED_SUFFIXES = (".sql", ".yml", ".yaml", ".csv", ".md")
_PARSED_DIRS = ("models", "macros", "tests", "seeds", "snapshots", "analyses")


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


def manifest_is_stale(project_dir: Path, manifest_path: Path) -> bool:
    """True when the manifest is missing or older than any file dbt parses."""
    if not manifest_path.exists():
        return True
    built = manifest_path.stat().st_mtime
    candidates = [project_dir / "dbt_project.yml", project_dir / "profiles.yml"]
    for name in _PARSED_DIRS:
        root = project_dir / name
        if root.is_dir():
            candidates.extend(p for p in root.rglob("*") if p.suffix in _PARSED_SUFFIXES)
    return any(p.stat().st_mtime > built for p in candidates if p.exists())


def ensure_manifest(project: DbtProject) -> bool:
    """Parse the project when its manifest is missing or stale; safe for concurrent loaders.
    True when this call parsed, False when the manifest was fresh (or another process just
    parsed it while this one waited for the lock)."""
    manifest = project.manifest_path
    if not manifest_is_stale(project.project_dir, manifest):
        return False
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(manifest.with_suffix(".lock")), timeout=300):
        if not manifest_is_stale(project.project_dir, manifest):
            return False
        scratch = Path(tempfile.mkdtemp(prefix=".parse-", dir=manifest.parent))
        try:
            dbt = DbtCliResource(project_dir=project, dbt_executable=_dbt_executable())
            dbt.cli(["parse", "--quiet"], target_path=scratch).wait()
            os.replace(scratch / "manifest.json", manifest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return True


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


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR)
ensure_manifest(dbt_project)


class SupportflowDbtTranslator(DagsterDbtTranslator):
    """dbt models as supportflow assets. Group and owners come from dbt_project.yml's meta and
    the raw-table asset keys from sources.yml (the default translator reads both); this adds a
    `supportflow/layer` tag (staging | mart) to filter on in the UI."""

    def get_tags(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, str]:
        tags = dict(super().get_tags(dbt_resource_props))
        layer = "mart" if "marts" in dbt_resource_props.get("fqn", []) else "staging"
        return {**tags, "supportflow/layer": layer}


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=SupportflowDbtTranslator(),
    name="analytics_dbt_models",
)
def analytics_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """`dbt build` of the selected models: run them, then their tests (reported as asset checks)."""
    set_process_environ(dbt_env(warehouse.url))
    invocation = dbt.cli(["build"], context=context)
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

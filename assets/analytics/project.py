"""The dbt project in `dbt_project/` as dagster-dbt sees it, and how its manifest is prepared.

The manifest (`dbt_project/target/manifest.json`) is prepared by dagster-dbt's own mechanism,
never by hand:

- `make setup` (and so `make test`, `make demo`, `make dev`) runs
  `dagster-dbt project prepare-and-package --file assets/analytics/project.py` (dbt deps and
  dbt parse) whenever a file of the dbt project is newer than the manifest, a fresh clone included;
- under `dagster dev` (`make dev`, `supportflow dev`), each load of the code location parses again
  when a file of the dbt project is newer than the manifest, so an edited model shows after
  "Reload location". Only then: every run worker loads the code location too, and dagster-dbt's
  own `prepare_if_dev` would parse in each of them, one at a time under a file lock that gives up
  after 60 s, failing runs ("Could not load job definition") whenever a few start together;
- a deployed code location loads the manifest built into its image (`deploy/Dockerfile`).

The prepare command loads this file on its own, so it imports nothing of supportflow.
"""

from pathlib import Path

from dagster_dbt import DbtProject


def _find_dbt_project() -> Path:
    """The checkout's dbt_project/, or the working directory's when supportflow runs installed
    into site-packages (the container image copies the project next to the code)."""
    beside_code = Path(__file__).resolve().parent.parent.parent / "dbt_project"
    in_cwd = Path.cwd() / "dbt_project"
    return beside_code if beside_code.is_dir() or not in_cwd.is_dir() else in_cwd


# What `make setup` watches too (Makefile, DBT_FILES).
DBT_SOURCE_SUFFIXES = {".sql", ".yml", ".yaml", ".csv", ".md"}
NOT_SOURCES = {"target", "logs", "dbt_packages"}


def manifest_is_stale(project: DbtProject) -> bool:
    """Whether the manifest is missing or older than a file of the dbt project."""
    manifest = Path(project.manifest_path)
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    root = Path(project.project_dir)
    for path in root.rglob("*"):
        relative = path.relative_to(root).parts
        if relative[0] in NOT_SOURCES or path.suffix not in DBT_SOURCE_SUFFIXES:
            continue
        if path.stat().st_mtime > built:
            return True
    return False


dbt_project = DbtProject(project_dir=_find_dbt_project())
if dbt_project.preparer.using_dagster_dev() and manifest_is_stale(dbt_project):
    dbt_project.preparer.prepare(dbt_project)

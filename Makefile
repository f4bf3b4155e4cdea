# The few commands people type. Each sets up .venv when missing and installs the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every package of the dependency tree at one version, for Python 3.11+ on any platform: the
# constraints of `make setup`, CI and deploy/Dockerfile. pyproject.toml keeps the ranges.
LOCK := requirements.lock
# Installed by the image only (deploy/Dockerfile, the K8s run launcher), locked with the rest.
IMAGE_ONLY := dagster-k8s>=0.29,<0.30
# The dbt manifest the analytics assets are built from, and every file dbt parses to make it.
MANIFEST := dbt_project/target/manifest.json
DBT_FILES := $(shell find dbt_project \( -path dbt_project/target -o -path dbt_project/logs \
	-o -path dbt_project/dbt_packages \) -prune -o -type f \( -name '*.sql' -o -name '*.yml' \
	-o -name '*.yaml' -o -name '*.csv' -o -name '*.md' \) -print)

.PHONY: setup lock test demo dev lint format bench clean

setup: $(STAMP) $(MANIFEST)

$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "supportflow needs Python 3.11+")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[dev]'
	$(BIN)/python -m pip check
	@touch $(STAMP)

# Re-resolve the lock after a change to pyproject.toml; versions already locked are kept where
# they still fit. `make lock LOCK_FLAGS=--upgrade` (or `--upgrade-package dagster`) moves them on.
LOCK_FLAGS ?=
lock:
	@test -x $(BIN)/uv || { test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
		$(BIN)/python -m pip install --quiet -c $(LOCK) uv; }
	echo '$(IMAGE_ONLY)' | $(BIN)/uv pip compile pyproject.toml - --extra dev --universal \
		--python-version 3.11 --custom-compile-command 'make lock' --quiet $(LOCK_FLAGS) -o $(LOCK)

# dagster-dbt's own preparation (dbt deps + dbt parse): on a fresh clone, and again whenever a dbt
# file changed. `dagster dev` also re-prepares at each load (assets/analytics/project.py).
$(MANIFEST): $(STAMP) $(DBT_FILES) assets/analytics/project.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dagster-dbt project prepare-and-package \
		--file assets/analytics/project.py
	@touch $@

test: setup
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations 25

demo: setup
	$(BIN)/supportflow demo

PORT ?= 3000

dev: setup
	$(BIN)/supportflow dev --port $(PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .supportflow .pytest_cache .ruff_cache

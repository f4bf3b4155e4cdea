# The few commands people type. Each sets up .venv when missing and installs the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The dbt manifest the analytics assets are built from, and every file dbt parses to make it.
MANIFEST := dbt_project/target/manifest.json
DBT_FILES := $(shell find dbt_project \( -path dbt_project/target -o -path dbt_project/logs \
	-o -path dbt_project/dbt_packages \) -prune -o -type f \( -name '*.sql' -o -name '*.yml' \
	-o -name '*.yaml' -o -name '*.csv' -o -name '*.md' \) -print)

.PHONY: setup test demo dev lint format bench clean

setup: $(STAMP) $(MANIFEST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "supportflow needs Python 3.11+")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# dagster-dbt's own preparation (dbt deps + dbt parse): on a fresh clone, and again whenever a dbt
# file changed. `dagster dev` also re-prepares at each load (assets/analytics/project.py).
$(MANIFEST): $(STAMP) $(DBT_FILES) assets/analytics/project.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dagster-dbt project prepare-and-package \
		--file assets/analytics/project.py
	@touch $@

test: setup
	$(BIN)/python -m pytest -q

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

# towerflow: the commands the README promises. `make run` and `make test` do all set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Prefect defaults for an offline, 2-core machine (see README): no telemetry, room for the
# temporary server's cold start, Prefect state kept inside the project.
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export PREFECT_HOME ?= $(CURDIR)/.towerflow/prefect

.PHONY: install run test test-slow check lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned (==2.13.0) in pyproject.toml: pip takes the local CPU wheel.
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/towerflow run
	$(BIN)/towerflow recommend --user-id 1 --k 10

test: install
	$(BIN)/pytest -m "not slow"

test-slow: install
	$(BIN)/pytest -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint
	$(BIN)/mypy model storage tasks flows towerflow
	$(MAKE) test

clean:
	rm -rf $(VENV) .towerflow .pytest_cache .mypy_cache .ruff_cache *.egg-info

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

.PHONY: install run test test-slow check lint format clean bench ablation ablation-movielens

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

# Every figure of bench/suite.py side by side with the bare library, at the default scale;
# JSON + markdown under bench/results/ (git-ignored). `python -m` puts the repository root on
# sys.path, so the bench package need not be installed. Extra options: BENCH_ARGS="--no-e2e".
bench: install
	$(BIN)/python -m towerflow bench --scale small --json bench/results/bench-small.json $(BENCH_ARGS)

# The ablation ladder (towerflow evaluate --ablation) on the default synthetic world and on
# a MovieLens-format log under the 8:1:1 per-user protocol; tables in bench/results/.
ablation: install
	$(BIN)/towerflow evaluate --ablation --out bench/results/ablation-synthetic-small.md $(ABLATION_ARGS)

ablation-movielens: install
	$(BIN)/python -m bench.movielens_like .towerflow/movielens-like
	$(BIN)/towerflow evaluate --ablation --config configs/movielens-like.yaml \
		--out bench/results/ablation-movielens-like.md $(ABLATION_ARGS)

check: lint
	$(BIN)/mypy model storage tasks flows towerflow service bench
	$(MAKE) test

clean:
	rm -rf $(VENV) .towerflow .pytest_cache .mypy_cache .ruff_cache *.egg-info

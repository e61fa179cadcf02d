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

.PHONY: install run test test-fast test-slow check lint format clean bench ablation ablation-movielens postgres shared-stack \
	ablation-real tune-real real-seeds ceiling browser ui

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned (==2.13.0) in pyproject.toml: pip takes the local CPU wheel.
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/towerflow run
	$(BIN)/towerflow recommend --user-id 1 --k 10

# Debian's Chromium, which the Prefect UI browser test (tests/ui) drives through Playwright
# (never `playwright install`: no browser downloads here). About 25 s the first time, as root
# with no prompt (CI has no stdin). Without root or apt it only warns: the test then skips,
# except under CI, where this fails instead.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the UI test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium >/dev/null && test -x $(CHROMIUM); \
	else \
		echo "warning: $(CHROMIUM) is missing and apt-get cannot run here (not root?): install" \
			"Debian's chromium (the UI test skips without it; under CI it fails)" >&2; \
		test -z "$$CI"; \
	fi

# Debian's PostgreSQL server binaries, which the shared-backend tests run (devtools.pgserver
# initialises a throwaway cluster in a temporary folder). Installing the package must not
# create or start a system cluster: createcluster.conf says so before apt runs (kept by
# --force-confold). Without root or apt it only warns: those tests then skip, except under
# CI, where this fails instead.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's postgresql server binaries (no cluster is created)"; \
		mkdir -p /etc/postgresql-common; \
		test -e /etc/postgresql-common/createcluster.conf || \
			echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends -o Dpkg::Options::=--force-confold postgresql >/dev/null && \
			ls /usr/lib/postgresql/*/bin/initdb >/dev/null; \
	else \
		echo "warning: PostgreSQL's server (initdb) is missing and apt-get cannot run here" \
			"(not root?): install Debian's postgresql (the shared-backend tests skip without" \
			"it; under CI they fail)" >&2; \
		test -z "$$CI"; \
	fi

# The shared deployment on this machine (README, "Shared deployment"): PostgreSQL, a
# Prefect server on it, a process pool with two workers and a store bound to the database,
# all on loopback under SHARED_DIR; Ctrl-C stops it.
SHARED_DIR ?= $(CURDIR)/.towerflow-shared
shared-stack: install postgres
	$(BIN)/python -m devtools.stack $(SHARED_DIR)

# What CI runs (.ci/run): everything but `slow`, the browser test of the Prefect UI included.
# Two workers by file (pytest-xdist): most long tests wait on a Prefect server or a
# subprocess, so two share 2 cores well (3m15s against 4m13s in one process, measured
# here); a file's tests stay in one worker, so module fixtures start once.
TEST_WORKERS ?= 2
test: install browser postgres
	$(BIN)/pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile

# The inner loop (under a minute): the unit tests of core, model and storage; no Prefect
# server, no subprocess running a whole pipeline.
test-fast: install
	$(BIN)/pytest tests/core tests/model tests/storage -m "not slow and not prefect and not e2e"

test-slow: install
	$(BIN)/pytest -m slow

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The Prefect UI (http://127.0.0.1:4200, UI_ARGS="--port N" for another port) with the
# deployments of prefect.yaml served against it; Ctrl-C stops both. Reuses a Prefect server
# already answering on that port.
ui: install
	$(BIN)/towerflow serve --ui $(UI_ARGS)

# Every figure of bench/suite.py side by side with the bare library, at the default scale;
# JSON + markdown under bench/results/ (git-ignored). `python -m bench` (bench/__main__.py;
# the towerflow CLI never imports bench/) puts the repository root on sys.path, so the bench
# package need not be installed. Extra options: BENCH_ARGS="--no-e2e".
bench: install
	$(BIN)/python -m bench --scale small --json bench/results/bench-small.json $(BENCH_ARGS)

# The ablation ladder (towerflow evaluate --ablation) on the default synthetic world and on
# a MovieLens-format log under the 8:1:1 per-user protocol; tables in bench/results/.
ablation: install
	$(BIN)/towerflow evaluate --ablation --out bench/results/ablation-synthetic-small.md $(ABLATION_ARGS)

ablation-movielens: install
	$(BIN)/python -m bench.movielens_like .towerflow/movielens-like
	$(BIN)/towerflow evaluate --ablation --config configs/movielens-like.yaml \
		--out bench/results/ablation-movielens-like.md $(ABLATION_ARGS)

# The ladder on real data: MovieLens Latest Small under RecBole's protocol (every rating
# implicit, per-user random 8:1:1, Recall@10 / NDCG@10, EASE; configs/ml-latest-small.yaml).
# The data set is not in the repository: DATA is the folder holding ml-latest-small/, by
# default the data folder of the one beside the checkout; the config reads it through the
# link .towerflow/ml-latest-small. Without it the target says so and does nothing. About
# 12 min on 2 cores, EASE's 7 l2 candidates ~3.5 min of it.
SHARED_DIR ?= $(abspath $(CURDIR)/..)/shared
DATA ?= $(SHARED_DIR)/data
ML_SMALL := $(abspath $(DATA))/ml-latest-small
# Links .towerflow/ml-latest-small to the data folder, or says why the target does nothing.
define real_data_link
	if [ ! -f "$(ML_SMALL)/ratings.csv" ]; then \
		echo "$@: skipped: $(ML_SMALL)/ratings.csv not found" \
			"(DATA=DIR names the folder holding ml-latest-small/)"; exit 0; \
	fi; \
	mkdir -p .towerflow && \
	{ [ -d .towerflow/ml-latest-small ] && [ ! -L .towerflow/ml-latest-small ] || \
		ln -sfn "$(ML_SMALL)" .towerflow/ml-latest-small; }
endef

ablation-real: install
	@$(real_data_link) && \
	$(BIN)/towerflow evaluate --ablation --config configs/ml-latest-small.yaml \
		--out bench/results/ablation-ml-latest-small.md $(ABLATION_ARGS)

# towerflow tune on the real log (split seed 2020): the recipe chosen on validation, the
# trial table and plot, and the tuned config, under bench/results/tune-ml-latest-small/.
TUNE_MINUTES ?= 20
TUNE_TRIALS ?= 60
tune-real: install
	@$(real_data_link) && \
	$(BIN)/towerflow tune --config configs/ml-latest-small.yaml --minutes $(TUNE_MINUTES) \
		--trials $(TUNE_TRIALS) --out bench/results/tune-ml-latest-small $(TUNE_ARGS)

# The ladder and the tuner (the SGD recipe's space, the linear tower's, the hybrid's) on each
# split seed, then mean ± std over seeds of what validation chose, next to EASE and
# popularity (bench/real_seeds.py). About (40 + TUNE_MINUTES) min per seed here.
SEEDS ?= 1 7 2020
TUNE_LINEAR_TRIALS ?= 16
REAL_OUT ?= bench/results/real-seeds
real-seeds: install
	@$(real_data_link) && \
	for s in $(SEEDS); do \
		$(BIN)/towerflow evaluate --ablation --config configs/ml-latest-small.yaml \
			--split-seed $$s --out $(REAL_OUT)/seed-$$s/ablation.md $(ABLATION_ARGS) && \
		$(BIN)/towerflow tune --config configs/ml-latest-small.yaml --split-seed $$s \
			--minutes $(TUNE_MINUTES) --trials $(TUNE_TRIALS) --out $(REAL_OUT)/seed-$$s/tune \
			$(TUNE_ARGS) && \
		$(BIN)/towerflow tune --config configs/ml-latest-small.yaml --split-seed $$s \
			--kind linear --trials $(TUNE_LINEAR_TRIALS) \
			--out $(REAL_OUT)/seed-$$s/tune-linear $(TUNE_ARGS) && \
		$(BIN)/towerflow tune --config configs/ml-latest-small.yaml --split-seed $$s \
			--kind hybrid --trials $(TUNE_LINEAR_TRIALS) \
			--out $(REAL_OUT)/seed-$$s/tune-hybrid $(TUNE_ARGS) || exit 1; \
	done && \
	$(BIN)/python -m bench.real_seeds $(REAL_OUT) --out $(REAL_OUT)/summary.md

# Information ceilings on the default synthetic world (bench/ceiling.py): the oracle, and
# models handed the true item (or user) vectors that learn only the other side.
ceiling: install
	$(BIN)/python -m bench.ceiling --scale small --out bench/results/ceiling-synthetic-small.md

check: lint
	$(BIN)/mypy model storage core tasks flows cli service bench
	$(MAKE) test

clean:
	rm -rf $(VENV) .towerflow .pytest_cache .mypy_cache .ruff_cache *.egg-info

"""The shared deployment (devtools.stack) for real: a Prefect server on PostgreSQL, a
process work pool with two workers running prefect.yaml's deployments, and a store whose
registry and catalogue are in the same PostgreSQL. Two nightly runs triggered at once run
one after the other (the deployment's concurrency limit holds across workers), and an
items event is picked up by a worker and published."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.pgserver import find_bindir
from devtools.stack import Stack, running_stack
from storage import Layout, VersionStore

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries are missing (make postgres installs them)")
        pytest.skip("PostgreSQL's server is not installed (make postgres installs it)")
    # Not under pytest's tmp folder: under root the cluster belongs to the postgres user.
    folder = Path(tempfile.mkdtemp(prefix="towerflow-test-stack-"))
    try:
        with running_stack(folder, workers=2) as running:
            yield running
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _client(stack: Stack, *args: str, timeout_s: float) -> object:
    done = subprocess.run(
        [sys.executable, "-m", "tests.flows.stack_client", *args],
        cwd=REPO, env=stack.client_env(), capture_output=True, text=True,
        timeout=timeout_s, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker_of(stack: Stack, run_id: str) -> list[str]:
    """The workers that ran ``run_id``: every worker that sees a scheduled run tries to
    submit it, and all but one are told to abort (the server admits one Pending)."""
    ran = []
    for i in range(len(stack.workers)):
        text = (stack.folder / f"worker-{i + 1}.log").read_text(errors="replace")
        tried = text.count(f"submitting flow run '{run_id}'")
        aborted = text.count(f"Aborted submission of flow run '{run_id}'")
        ran += [f"worker-{i + 1}"] * (tried - aborted)
    return ran


def test_two_nightlies_at_once_run_one_after_the_other(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _client(stack, "nightlies", "2", timeout_s=900)
    assert isinstance(runs, list) and len(runs) == 2
    assert [r["state"] for r in runs] == ["Completed", "Completed"], runs
    first, second = sorted(runs, key=lambda r: r["start"])
    assert first["end"] <= second["start"], runs  # never both running
    for run in runs:
        assert len(_worker_of(stack, run["id"])) == 1, (run, _worker_of(stack, run["id"]))
    # This process reads the store too: the database's password, from the environment.
    monkeypatch.setenv("TOWERFLOW_DATABASE_URL", stack.database_url)
    store = VersionStore(Layout(stack.store_root))
    publishes = [e for e in store.registry.events() if e.action == "publish"]
    assert len(publishes) == 2 and store.current() == publishes[-1].to_version
    assert not Layout(stack.store_root).registry_db.exists()  # it is in PostgreSQL


def test_an_items_event_is_picked_up_by_a_worker(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOWERFLOW_DATABASE_URL", stack.database_url)
    store = VersionStore(Layout(stack.store_root))
    before = store.current()
    assert before is not None  # the nightlies above published
    done = _client(stack, "items", "stack-e-1", timeout_s=300)
    assert isinstance(done, dict) and done["version"] != before
    assert store.current() == done["version"]
    logs = "".join(
        (stack.folder / f"worker-{i + 1}.log").read_text(errors="replace")
        for i in range(len(stack.workers))
    )
    assert "new-items" in logs  # a worker of the pool ran the triggered flow

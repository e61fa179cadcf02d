"""A flow that fails under `towerflow run` / `add-items --now` is reported once, with its
reason and exit code; Prefect's tracebacks of the failed task and flow stay in the run's
logs (the API), off the terminal."""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.logging.handlers import APILogWorker
from typer.testing import CliRunner

import core.deltas
from cli.app import app
from cli.flowlogs import quiet_run_failures
from cli.options import PREFECT_DEFAULTS
from storage import Layout, file_lock
from tests.cli.test_errors import json_error, one_error
from tests.core.items.conftest import MakeStore, item

pytestmark = pytest.mark.prefect

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` and `add-items --now` set Prefect defaults in os.environ; undo them."""
    for key in PREFECT_DEFAULTS:
        monkeypatch.setenv(key, os.environ.get(key, ""))
        if not os.environ[key]:
            monkeypatch.delenv(key)


def test_the_quality_gate_failing_in_run_is_one_reason_line(tmp_path: Path) -> None:
    """On a real terminal's streams (a child process, its own temporary Prefect server)."""
    config = tmp_path / "gate.yaml"
    config.write_text("evaluation: {gate_min_lift: 1000.0}\n")
    argv = ["run", "--scale", "tiny", "--epochs", "1", "--config", str(config)]
    proc = subprocess.run(
        [sys.executable, "-m", "cli", *argv, "--root", str(tmp_path / "store")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 5, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    assert errors[0].startswith("error: quality gate failed: model recall@50 = ")
    assert "CURRENT is unchanged" in errors[0]
    # Before: 300+ lines of the task's, the flow's and the CLI's tracebacks.
    assert "Traceback" not in out and "QualityGateError" not in out, out
    assert "Finished in state Failed" not in out and "Task run failed" not in out
    assert "train (epochs)" in out  # the progress bars are still there
    assert " INFO " not in out  # quiet by default (-v shows each step's messages)


def test_failures_stay_in_the_run_logs_and_off_the_console(prefect_harness: None) -> None:
    @task(name="always-fails")
    def always_fails() -> None:
        raise RuntimeError("the reason")

    @flow(name="failing-flow")
    def failing() -> None:
        always_fails()

    console = io.StringIO()
    handler = logging.StreamHandler(console)
    logging.getLogger().addHandler(handler)
    try:
        with quiet_run_failures():
            state = failing(return_state=True)
    finally:
        logging.getLogger().removeHandler(handler)
    assert state.is_failed()
    assert "Traceback" not in console.getvalue() and "the reason" not in console.getvalue()
    assert "Beginning flow run" in console.getvalue()  # the rest still shows
    APILogWorker.drain_all(timeout=10)  # the run's logs reach the API
    run_id = state.state_details.flow_run_id
    assert run_id is not None
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    messages = "\n".join(log.message for log in logs)
    assert "Task run failed with exception: RuntimeError('the reason')" in messages
    assert "Traceback" in messages


def test_a_second_run_on_a_locked_store_exits_9(prefect_harness: None, tmp_path: Path) -> None:
    root = tmp_path / "store"
    with file_lock(Layout(root).nightly_lock, timeout_s=1, owner="flow run other-run"):
        result = runner.invoke(app, ["run", "--scale", "tiny", "--root", str(root)])
        json_out = runner.invoke(app, ["run", "--scale", "tiny", "--root", str(root), "--json"])
    line = one_error(result, 9)
    assert "another nightly run is in progress" in line and "other-run" in line
    assert json_error(json_out, 9)["type"] == "OverlappingRunError"


def test_add_items_now_failures(
    prefect_harness: None,
    make_store: MakeStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    items = tmp_path / "items.json"
    items.write_text(f"[{item(7001)}]".replace("'", '"'))
    # No CURRENT yet: nothing to add the items to.
    empty = runner.invoke(app, ["add-items", str(items), "--root", str(tmp_path / "e"), "--now"])
    assert "nothing published yet" in one_error(empty, 3)

    # The delta's tables hit a full disk.
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    root = str(make_store("Flat").layout.root)
    monkeypatch.setattr(core.deltas, "write_table", full)
    result = runner.invoke(app, ["add-items", str(items), "--root", root, "--now"])
    line = one_error(result, 7)
    assert line.startswith("error: disk full: ") and "No space left on device" in line
    assert "free space" in line

"""bench.runners' table and bench.e2e's step times from a Prefect database (the format
Prefect 3 writes on SQLite: intervals as a datetime past the epoch)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.e2e import ProcessPeaks, process_role, subflow_seconds, task_seconds
from bench.runners import render


def _db(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE task_run (name TEXT, state_type TEXT, total_run_time TEXT)")
    con.executemany("INSERT INTO task_run VALUES (?, ?, ?)", rows)
    con.commit()
    con.close()
    return path


def test_task_seconds_sums_the_runs_of_each_task(tmp_path: Path) -> None:
    db = _db(
        tmp_path / "prefect.db",
        [
            ("train-model-80d", "COMPLETED", "1970-01-01 00:02:07.047043"),
            ("embed-items-shard-a1b", "COMPLETED", "1970-01-01 00:00:01.500000"),
            ("embed-items-shard-c2d", "COMPLETED", "1970-01-01 00:00:02.000000"),
            ("evaluate-9f0", "FAILED", "1970-01-01 00:00:09.000000"),  # not counted
        ],
    )
    assert task_seconds(db) == {"train-model": 127.047043, "embed-items-shard": 3.5}
    assert task_seconds(tmp_path / "missing.db") == {}


def test_subflow_seconds_sums_the_completed_runs_of_each_flow(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "prefect.db")
    con.execute("CREATE TABLE flow (id TEXT, name TEXT)")
    con.execute("CREATE TABLE flow_run (flow_id TEXT, state_type TEXT, total_run_time TEXT)")
    con.executemany(
        "INSERT INTO flow VALUES (?, ?)", [("a", "nightly"), ("b", "build-index-sharded")]
    )
    con.executemany(
        "INSERT INTO flow_run VALUES (?, ?, ?)",
        [
            ("a", "COMPLETED", "1970-01-01 00:08:00.000000"),
            ("b", "COMPLETED", "1970-01-01 00:00:20.500000"),
            ("b", "FAILED", "1970-01-01 00:00:09.000000"),  # not counted
        ],
    )
    con.commit()
    con.close()
    assert subflow_seconds(tmp_path / "prefect.db") == {
        "nightly": 480.0,
        "build-index-sharded": 20.5,
    }
    assert subflow_seconds(tmp_path / "missing.db") == {}


def test_process_peaks_sees_a_child_that_grows_and_names_roles() -> None:
    # A child that holds ~200 MiB for a moment: its high-water mark is seen, and kept
    # after it frees the memory.
    code = "import time; b = bytearray(200 << 20); time.sleep(1.0); del b; time.sleep(0.5)"
    child = subprocess.Popen([sys.executable, "-c", code])
    peaks = ProcessPeaks(child.pid, interval=0.05)
    peaks.start()
    child.wait(timeout=30)
    peaks.stop()
    root = peaks.by_role()["flow process"]
    assert root["processes"] == 1 and 190 < root["max_mib"] < 400
    [seen] = peaks.processes()
    assert seen["pid"] == child.pid and seen["role"] == "flow process"
    assert seen["max_mib"] == root["max_mib"] and 0 <= float(seen["first_seen_s"]) < 1.0
    assert process_role("python -c from multiprocessing.spawn import spawn_main", False) == (
        "dask worker"
    )
    assert process_role("python -m core.distributed job.json", False) == "training rank"
    assert process_role("python -m uvicorn prefect.server.api.server:create_app", False) == (
        "prefect server"
    )
    assert process_role("sleep 1", False) == "other"


def _run(wall: float, steps: dict[str, float]) -> dict[str, Any]:
    return {
        "wall_s": wall,
        "flow_s": wall - 20,
        "peak_rss_mib": 1000.0,
        "steps": steps,
        "gate_metric": "recall@50",
        "model_gate_value": 0.3,
        "popularity_gate_value": 0.07,
        "oracle_gate_value": 0.36,
    }


def test_render_puts_the_runners_side_by_side_with_the_sharded_steps_summed() -> None:
    local = _run(100.0, {"embed-items": 4.0, "evaluate": 30.0, "train-model": 50.0})
    dask = _run(
        110.0,
        {"plan-embed-items": 1.0, "embed-items-shard": 6.0, "merge-embed-items": 1.0,
         "plan-evaluate": 2.0, "evaluate-shard": 30.0, "merge-evaluate": 4.0,
         "train-model": 50.0},
    )  # fmt: skip
    dask["subflows"] = {"embed-evaluate-sharded": 40.0}
    dask["peak_rss_by_role_mib"] = {
        "flow process": {"max_mib": 900.0, "processes": 1},
        "dask worker": {"max_mib": 700.0, "processes": 2},
    }
    local["peak_rss_by_role_mib"] = {"flow process": {"max_mib": 1000.0, "processes": 1}}
    table = render({"local": [local], "dask, 2 workers": [dask]})
    assert "| embed-evaluate-sharded subflow (wall s) | 0.0 | 40.0 | nanx |" in table
    assert "| peak RSS, flow process (largest, MiB) | 1,000.0 | 900.0 | 0.90x |" in table
    assert "| peak RSS, dask worker (largest, MiB) | 0.0 | 700.0 | nanx |" in table
    assert "| wall (s) | 100.0 | 110.0 | 1.10x |" in table
    assert "| embed-items (task s) | 4.0 | 8.0 | 2.00x |" in table
    assert "| evaluate (task s) | 30.0 | 36.0 | 1.20x |" in table
    assert "| train-model (task s) | 50.0 | 50.0 | 1.00x |" in table
    assert "dask, 2 workers: model 0.3000, popularity 0.0700, oracle 0.3600" in table

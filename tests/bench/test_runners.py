"""bench.runners' table and bench.e2e's step times from a Prefect database (the format
Prefect 3 writes on SQLite: intervals as a datetime past the epoch)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from bench.e2e import task_seconds
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
    table = render({"local": [local], "dask, 2 workers": [dask]})
    assert "| wall (s) | 100.0 | 110.0 | 1.10x |" in table
    assert "| embed-items (task s) | 4.0 | 8.0 | 2.00x |" in table
    assert "| evaluate (task s) | 30.0 | 36.0 | 1.20x |" in table
    assert "| train-model (task s) | 50.0 | 50.0 | 1.00x |" in table
    assert "dask, 2 workers: model 0.3000, popularity 0.0700, oracle 0.3600" in table

"""``python -m bench --shared-cores`` end to end at the tiny scale: it starts and stops its
co-tenant, measures every step on both sides and writes the table. Nothing here asserts a
speed (benchmarks are not timed tests), only that each figure exists and is sane."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pytest

from bench.shared import cotenant

REPO = Path(__file__).resolve().parents[2]


def test_cotenant_starts_and_stops_its_processes() -> None:
    with cotenant(2):
        busy = [p for p in mp.active_children() if p.is_alive()]
        assert len(busy) >= 2
    assert not [p for p in busy if p.is_alive()]


@pytest.mark.slow
def test_shared_cores_mode_writes_every_step(tmp_path: Path) -> None:
    out = tmp_path / "shared.json"
    args = ["--shared-cores", "--scale", "tiny", "--repeats", "1", "--train-steps", "30"]
    subprocess.run(
        [sys.executable, "-m", "bench", *args, "--json", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=600,
    )
    res = json.loads(out.read_text())
    steps = ("training", "embedding", "evaluation", "recall_served_p99", "recall_back_to_back_p99")
    for load in ("quiet", "shared"):
        for step in steps:
            (value,) = res["samples"][load][step]
            assert math.isfinite(value) and value > 0
    assert res["cotenant_processes"] >= 1
    table = out.with_suffix(".md").read_text()
    for step in steps:
        assert f"| {step} |" in table

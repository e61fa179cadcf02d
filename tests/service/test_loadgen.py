"""bench/loadgen.py end to end on the tiny store: it starts `towerflow api`, measures a
few requests over HTTP and in-process, prints the table, writes JSON and stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.loadgen import main
from tests.conftest import Published


@pytest.mark.prefect
def test_loadgen_runs_on_the_tiny_store(
    published: Published, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    argv = ["--root", str(published.root), "--requests", "20", "--warmup", "5"]
    argv += ["--concurrency", "1,2", "--duration", "20", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    paths = [(p["path"], p["concurrency"]) for p in result["phases"]]
    assert paths == [
        ("http floor (GET /v1/version)", 1),
        ("http", 1),
        ("http", 2),
        ("in-process (auto)", 1),
        ("in-process (selector)", 1),
        ("in-process (overfetch)", 1),
    ]
    assert all(p["errors"] == 0 and p["requests"] == 20 for p in result["phases"])
    assert result["ratios"]["http p50 / in-process p50 (concurrency 1)"] > 0
    assert "| http | 2 | 20 | 0 |" in capsys.readouterr().out

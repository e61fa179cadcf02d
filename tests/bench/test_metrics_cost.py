"""bench/metrics_cost.py on the session's tiny store: both apps answer every request, the
table has both endpoints under both settings with positive latencies, and the JSON holds
one block mean per round and the on / off comparison. No timing thresholds: the cost is a
few µs, well inside a shared machine's noise at this size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.metrics_cost import OFF, ON, RECALL, VERSION, main
from tests.conftest import Published


@pytest.mark.prefect
def test_metrics_cost_runs_on_the_tiny_store(
    published: Published, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "metrics-cost.json"
    argv = ["--root", str(published.root), "--requests", "8", "--blocks", "2"]
    argv += ["--warmup", "2", "--users", "20", "--json", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())

    rows = {(r["endpoint"], r["setting"]): r for r in result["rows"]}
    assert set(rows) == {(e, s) for e in (RECALL, VERSION) for s in (ON, OFF)}
    for row in rows.values():
        assert row["requests"] == 16 and row["errors"] == 0
        assert row["p50_us"] > 0 and row["p99_us"] >= row["p50_us"]
        assert row["block_mean_us"] > 0
        assert len(row["block_means_us"]) == 2 and min(row["block_means_us"]) > 0
    assert [c["endpoint"] for c in result["comparisons"]] == [RECALL, VERSION]
    assert all(c["ratio"] > 0 for c in result["comparisons"])

    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert "on - off µs" in lines[0]
    for endpoint in (RECALL, VERSION):
        for setting in (ON, OFF):
            line = next(x for x in lines if x.startswith(f"| {endpoint} | {setting} |"))
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[2] == "16" and cells[3] == "0"
            assert all(float(c) > 0 for c in cells[4:7])  # p50, p99, block mean
            if setting == ON:  # the comparison sits on the "on" row
                assert float(cells[8]) > 0

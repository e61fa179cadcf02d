"""bench.serving_latency publishes each recipe and times every user's request: on the
tiny world the table has every recipe, their real widths and finite latencies."""

from __future__ import annotations

import pytest

from bench.serving_latency import main


@pytest.mark.e2e
def test_serving_latency_table_on_the_tiny_world(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scale", "tiny", "--repeats", "1", "--epochs", "1", "--k", "10"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| recipe |")
    by_name = {r.split(" | ")[0].lstrip("| "): r.split(" | ") for r in rows[1:]}
    assert set(by_name) == {"linear rung", "hybrid rung", "mlp + wide"}
    assert by_name["linear rung"][1] == "1024" and by_name["mlp + wide"][1] == "256"
    assert by_name["hybrid rung"][1] == "1280"  # both parts' slots side by side
    for cells in by_name.values():
        p50, p99 = float(cells[2]), float(cells[3])
        assert 0 < p50 <= p99
    assert by_name["mlp + wide"][5].strip(" |") == "1.00x"

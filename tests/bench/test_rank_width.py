"""bench.rank_width imports a log, ranks its validation split both ways and prints one
row per width with the same metric from both paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.rank_width import main


def test_rank_width_table_on_a_small_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    lines = ["user,item,ts"]
    for u in range(60):  # a few heavy users among light ones
        taken = rng.choice(300, 150 if u < 3 else 12, replace=False)
        lines += [f"{u},{i},{1_600_000_000 + j}" for j, i in enumerate(taken)]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "c.yaml").write_text(
        "data:\n  source: import\n  importing:\n    name: small-log\n    interactions:\n"
        f"      path: {tmp_path / 'log.csv'}\n      user_col: user\n      item_col: item\n"
        "      time_col: ts\n      timestamp_unit: s\n  protocol: random_ratio\n"
        "  ratios: [0.8, 0.1, 0.1]\n"
    )
    assert main(["--config", str(tmp_path / "c.yaml"), "--dims", "8", "32", "--repeats", "1"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")]
    assert rows[0].startswith("| dims |") and len(rows) == 3
    for row, dims in zip(rows[1:], ("8", "32"), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == dims and float(cells[1]) > 0 and float(cells[2]) > 0
        fast, dense = cells[4].split(" / ")
        assert fast == dense  # both paths rank alike

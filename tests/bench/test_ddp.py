"""``bench.ddp``: the table it prints from per-run figures (mean ± sd over seeds, the
throughput ratio against the first world size, every seed's figure)."""

from __future__ import annotations

from typing import Any

from bench.ddp import render


def _row(world: int, seed: int, recall: float, rate: float) -> dict[str, Any]:
    return {
        "world_size": world,
        "seed": seed,
        "version": f"v{world}{seed}",
        "recall@50": recall,
        "popularity recall@50": 0.05,
        "examples_per_s": rate,
        "train_s": 1000.0 / rate,
        "epochs": 5,
    }


def test_render_summarises_each_world_size_over_its_seeds() -> None:
    rows = [
        _row(1, 0, 0.30, 100.0), _row(2, 0, 0.31, 90.0),
        _row(1, 1, 0.32, 110.0), _row(2, 1, 0.29, 80.0),
        _row(1, 2, 0.34, 120.0), _row(2, 2, 0.30, 70.0),
    ]  # fmt: skip
    table = render(rows)
    lines = table.splitlines()
    # mean ± sample sd of 0.30, 0.32, 0.34 and of 0.31, 0.29, 0.30; median rates 110 / 80.
    assert "| 1 | 0.3200 ± 0.0200 | 110 | 1.00x | 9.1 |" in lines
    assert "| 2 | 0.3000 ± 0.0100 | 80 | 0.73x | 12.5 |" in lines
    assert "| 1 | 0.3200 | 0.2900 |" in lines  # seed 1: one process, then two
    assert "Popularity Recall@50: 0.0500. Epochs per run: 5." in table

"""bench.refine end to end on a small world: nprobe alone misses the target that tuning
the refinement factor too reaches."""

from __future__ import annotations

import pytest

from bench.refine import main


def test_refine_table_shows_both_tunings(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--n", "6000", "--dim", "16", "--clusters", "32", "--factory", "IVF32,PQ4,RFlat"]
    assert main([*args, "--queries", "200", "--k", "50"]) == 0
    out = capsys.readouterr().out
    assert "| nprobe only (k_factor_rf 1) |" in out and "target met" in out
    plain = next(line for line in out.splitlines() if line.startswith("| nprobe only"))
    every = next(line for line in out.splitlines() if line.startswith("| every knob"))
    assert float(plain.split("|")[3]) < 0.95 <= float(every.split("|")[3])
    assert "k_factor_rf=" in every

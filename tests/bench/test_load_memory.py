"""bench.load_memory: both ways of loading a snapshot give the same dataset, and the
benchmark prints them side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.load_memory import _load_whole, main, measure
from core.config import DataConfig
from core.dataio import load_dataset
from core.snapshots import ensure_snapshot
from storage import Layout


def test_the_two_loads_agree_and_the_table_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = ensure_snapshot(str(tmp_path), DataConfig(scale="tiny"))
    folder = Layout(tmp_path).snapshot_dir(ref.snapshot_id)
    whole, streamed = _load_whole(folder), load_dataset(folder, batch_rows=1000)
    for name in ("user_id", "item_id", "inter_user", "inter_item", "inter_ts", "content"):
        np.testing.assert_array_equal(getattr(streamed, name), getattr(whole, name))
    assert measure(folder, "streamed")["interactions"] == ref.n_interactions

    assert main(["--root", str(tmp_path), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{ref.n_interactions:,} interactions" in out
    assert "| load (s) |" in out and "| peak RSS above baseline (MiB) |" in out

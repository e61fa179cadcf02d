"""Synthetic data drawn by user blocks (``core.sharded_data``): plan -> shards -> merge in
this process, as a Dask worker would run them. Any split gives the snapshot one process
writes; a stored snapshot needs no shards; a tampered part or a vanished staging folder
is refused by name, and a failed draw leaves no snapshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import DataConfig
from core.sharded import Span
from core.sharded_data import generate_shard, merge_generation, plan_generation
from core.snapshots import ensure_snapshot, snapshot_id_for
from storage import (
    CATEGORIES,
    IMPRESSIONS,
    INTERACTIONS,
    ITEMS,
    TRUTH_ITEMS,
    TRUTH_USERS,
    USERS,
    CorruptVersionError,
    Layout,
    list_snapshots,
    read_json,
    read_table,
)

# The tables every synthetic snapshot holds.
SNAPSHOT_TABLES = (USERS, ITEMS, CATEGORIES, INTERACTIONS, IMPRESSIONS, TRUTH_USERS, TRUTH_ITEMS)

# 150 users in blocks of 32: 5 blocks, the last one short.
CFG = DataConfig(scale="tiny", seed=3, overrides={"n_users": 150, "block_users": 32})


def _draw_in_shards(root: Path, shard_users: int | None, n_shards: int = 1) -> str:
    plan = plan_generation(str(root), CFG, shard_users, n_shards)
    assert plan.snapshot is None
    parts = [generate_shard(CFG, plan, span) for span in reversed(plan.spans)][::-1]
    return merge_generation(CFG, plan, parts).snapshot_id


@pytest.mark.parametrize(("shard_users", "n_shards", "expected"), [(None, 2, 2), (40, 1, 3)])
def test_any_split_writes_the_snapshot_one_process_writes(
    tmp_path: Path, shard_users: int | None, n_shards: int, expected: int
) -> None:
    one = ensure_snapshot(str(tmp_path / "one"), CFG)
    plan = plan_generation(str(tmp_path / "split"), CFG, shard_users, n_shards)
    # 40 users round up to 2 blocks a shard: 2 + 2 + 1.
    assert len(plan.spans) == expected and plan.spans[-1].hi == 5
    parts = [generate_shard(CFG, plan, span) for span in plan.spans]
    split = merge_generation(CFG, plan, parts)

    assert split == one.model_copy(update={"root": str(tmp_path / "split")})
    for spec in SNAPSHOT_TABLES:
        tables = [
            read_table(Layout(tmp_path / d).snapshot_dir(one.snapshot_id) / spec.file_name, spec)
            for d in ("one", "split")
        ]
        assert tables[0].num_rows > 0 and tables[1].equals(tables[0]), spec.name
    meta = read_json(Layout(tmp_path / "split").snapshot_dir(one.snapshot_id) / "snapshot.json")
    assert meta["generator"]["version"] == 2 and meta["generator"]["block_users"] == 32
    # The parts went with the merge; nothing is left staged.
    staging = tmp_path / "split" / "staging"
    assert not any((staging / "shards").iterdir()) and not any((staging / "snapshots").iterdir())


def test_a_stored_snapshot_is_reused_without_shards(tmp_path: Path) -> None:
    first = _draw_in_shards(tmp_path, None, 2)
    plan = plan_generation(str(tmp_path), CFG, None, 2)
    assert plan.snapshot is not None and plan.snapshot.snapshot_id == first and plan.spans == []
    assert merge_generation(CFG, plan, []) == plan.snapshot
    with pytest.raises(ValueError, match="nothing to draw"):
        generate_shard(CFG, plan, Span(index=0, lo=0, hi=1))


def test_the_generator_version_is_part_of_the_snapshot_id() -> None:
    # An earlier algorithm's snapshot is never taken for this one's: the id hashes the
    # generator config, version included.
    assert snapshot_id_for(CFG) != snapshot_id_for(
        CFG.model_copy(update={"overrides": {**CFG.overrides, "block_users": 64}})
    )
    with pytest.raises(ValueError, match="version"):
        ensure_snapshot("/nonexistent", CFG.model_copy(update={"overrides": {"version": 1}}))


def test_a_tampered_part_is_refused_and_no_snapshot_is_committed(tmp_path: Path) -> None:
    plan = plan_generation(str(tmp_path), CFG, None, 2)
    parts = [generate_shard(CFG, plan, span) for span in plan.spans]
    victim = tmp_path / "staging" / "shards" / plan.staging / "generate" / parts[1].impressions.name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    with pytest.raises(CorruptVersionError, match=r"impressions-00001\.parquet"):
        merge_generation(CFG, plan, parts)
    with pytest.raises(ValueError, match="1 part"):
        merge_generation(CFG, plan, parts[:1])
    assert list_snapshots(Layout(tmp_path)) == []


def test_a_shard_whose_staging_is_gone_says_so(tmp_path: Path) -> None:
    plan = plan_generation(str(tmp_path), CFG, None, 2)
    staged = tmp_path / "staging" / "snapshots" / plan.staging
    for f in staged.iterdir():
        os.unlink(f)
    staged.rmdir()
    with pytest.raises(FileNotFoundError, match="ended, or this worker runs on another machine"):
        generate_shard(CFG, plan, plan.spans[0])

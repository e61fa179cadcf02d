"""Data snapshots: staged privately, committed by rename, first concurrent writer wins."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from storage import (
    USERS,
    Layout,
    SnapshotFiles,
    SnapshotNotFoundError,
    begin_snapshot,
    commit_snapshot,
    list_snapshots,
    read_json,
    read_table,
    snapshot_exists,
    snapshot_path,
    vectors_to_arrow,
    write_json,
    write_table,
)


def _stage(layout: Layout, snapshot_id: str, marker: int) -> pa.Table:
    staging = begin_snapshot(layout, snapshot_id)
    users = pa.table(
        {"user_id": pa.array([1, 5], pa.int64()), "profile": vectors_to_arrow(np.eye(2) * marker)}
    )
    write_table(staging / SnapshotFiles.USERS, users, USERS)
    write_json(staging / SnapshotFiles.MANIFEST, {"snapshot_id": snapshot_id, "marker": marker})
    return staging


def test_commit_and_read_back(layout: Layout) -> None:
    assert not snapshot_exists(layout, "s1") and list_snapshots(layout) == []
    staging = _stage(layout, "s1", marker=1)
    path = commit_snapshot(layout, "s1", staging)
    assert path == snapshot_path(layout, "s1") == layout.snapshot_dir("s1")
    assert snapshot_exists(layout, "s1") and not staging.exists()
    assert read_json(path / SnapshotFiles.MANIFEST)["marker"] == 1
    assert read_table(path / SnapshotFiles.USERS, USERS).num_rows == 2


def test_concurrent_writers_first_commit_wins(layout: Layout) -> None:
    first = _stage(layout, "s1", marker=1)
    second = _stage(layout, "s1", marker=2)
    assert first != second  # private staging folders, even for the same id
    commit_snapshot(layout, "s1", first)
    path = commit_snapshot(layout, "s1", second)
    assert read_json(path / SnapshotFiles.MANIFEST)["marker"] == 1
    assert not second.exists() and list_snapshots(layout) == ["s1"]


def test_missing_snapshot_lists_available(layout: Layout) -> None:
    commit_snapshot(layout, "s1", _stage(layout, "s1", marker=1))
    with pytest.raises(SnapshotNotFoundError, match=r"'s2' not found.*available.*\['s1'\]"):
        snapshot_path(layout, "s2")
    with pytest.raises(FileNotFoundError):  # SnapshotNotFoundError is a FileNotFoundError
        snapshot_path(layout, "s2")


def test_commit_requires_finished_staging(layout: Layout) -> None:
    staging = begin_snapshot(layout, "s1")
    with pytest.raises(FileNotFoundError, match=r"lacks snapshot\.json"):
        commit_snapshot(layout, "s1", staging)
    (staging / ".users.parquet.tmp-1-ab").write_bytes(b"")
    write_json(staging / SnapshotFiles.MANIFEST, {})
    with pytest.raises(RuntimeError, match="unfinished writes"):
        commit_snapshot(layout, "s1", staging)
    with pytest.raises(ValueError, match="not a snapshot staging folder"):
        commit_snapshot(layout, "s1", layout.root)
    assert not snapshot_exists(layout, "s1")

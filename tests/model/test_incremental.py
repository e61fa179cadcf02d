"""In-place index edits: true upserts and removals where Faiss can remove, tombstones and
a rebuild signal where it cannot; never a duplicate ID."""

from __future__ import annotations

import numpy as np
import pytest

from model.incremental import RebuildRequired, edit_index, supports_remove
from model.index import build_index


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("factory", "removable"), [("Flat", True), ("IVF4,Flat", True), ("HNSW8", False)]
)
def test_supports_remove(factory: str, removable: bool) -> None:
    assert supports_remove(build_index(_unit(200, 8, 0), np.arange(200), factory)) == removable


def test_upsert_replaces_and_retire_removes_on_a_removable_index() -> None:
    ids = np.arange(100, dtype=np.int64)
    index = build_index(_unit(100, 8, 0), ids, "Flat")
    new = _unit(2, 8, 1)
    edit = edit_index(
        index, ids, np.empty(0, np.int64), np.array([5, 500]), new, np.array([7, 9999])
    )
    assert (edit.removed, edit.added, len(edit.tombstones)) == (2, 2, 0)  # 5 and 7 removed
    held = np.sort(np.asarray([index.id_map.at(i) for i in range(index.ntotal)]))
    assert held.tolist() == sorted({*range(100), 500} - {7})
    _, found = index.search(new[:1], 1)
    assert found[0, 0] == 5  # the new vector answers for item 5


def test_hnsw_tombstones_retirements_and_asks_for_a_rebuild_on_upsert() -> None:
    ids = np.arange(50, dtype=np.int64)
    index = build_index(_unit(50, 8, 0), ids, "HNSW8")
    edit = edit_index(
        index, ids, np.empty(0, np.int64), np.array([60]), _unit(1, 8, 2), np.array([3, 4])
    )
    assert edit.tombstones.tolist() == [3, 4] and index.ntotal == 51
    held = np.union1d(ids, [60])
    with pytest.raises(RebuildRequired):
        edit_index(
            index, held, edit.tombstones, np.array([3]), _unit(1, 8, 3), np.empty(0, np.int64)
        )
    assert index.ntotal == 51  # nothing half-done


def test_duplicate_upsert_ids_are_refused() -> None:
    index = build_index(_unit(10, 8, 0), np.arange(10), "Flat")
    with pytest.raises(ValueError, match="unique"):
        edit_index(
            index,
            np.arange(10),
            np.empty(0, np.int64),
            np.array([20, 20]),
            _unit(2, 8, 1),
            np.empty(0, np.int64),
        )

"""In-place index edits: true upserts and removals where Faiss can remove; where it cannot,
an overlay of tombstones and fresh vectors that keeps every item once, with its current
vector; never a duplicate ID."""

from __future__ import annotations

import numpy as np
import pytest

from model.incremental import BLOCKED_MAX_SHARE, FRESH_MAX, Overlay, edit_index, supports_remove
from model.index import build_index

NONE = np.empty(0, np.int64)


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
    edit = edit_index(index, ids, Overlay.empty(8), np.array([5, 500]), new, np.array([7, 9999]))
    assert (edit.removed, edit.added, edit.overlay.blocked) == (2, 2, 0)  # 5 and 7 removed
    held = np.sort(np.asarray([index.id_map.at(i) for i in range(index.ntotal)]))
    assert held.tolist() == sorted({*range(100), 500} - {7})
    _, found = index.search(new[:1], 1)
    assert found[0, 0] == 5  # the new vector answers for item 5


def test_hnsw_keeps_retired_vectors_as_tombstones_and_updates_as_fresh_vectors() -> None:
    ids = np.arange(50, dtype=np.int64)
    index = build_index(_unit(50, 8, 0), ids, "HNSW8")
    edit = edit_index(
        index, ids, Overlay.empty(8), np.array([60]), _unit(1, 8, 2), np.array([3, 4])
    )
    assert edit.overlay.tombstones.tolist() == [3, 4] and index.ntotal == 51
    assert len(edit.overlay.fresh_ids) == 0
    held = np.union1d(ids, [60])
    # Item 5 updated, 4 brought back (a tombstone revived), 60 (added above) updated: none
    # is added to the index a second time; 7 is retired.
    vecs = _unit(3, 8, 3)
    again = edit_index(index, held, edit.overlay, np.array([4, 5, 60]), vecs, np.array([7]))
    assert (again.added, index.ntotal) == (0, 51)
    assert again.overlay.tombstones.tolist() == [3, 7]
    assert again.overlay.fresh_ids.tolist() == [4, 5, 60]
    np.testing.assert_array_equal(again.overlay.fresh_vectors, vecs)
    # A fresh item updated again keeps one fresh vector; retired, it becomes a tombstone.
    last = edit_index(index, held, again.overlay, np.array([5]), vecs[:1] * 0 + 1, np.array([60]))
    assert last.overlay.fresh_ids.tolist() == [4, 5]
    assert last.overlay.tombstones.tolist() == [3, 7, 60]
    np.testing.assert_array_equal(last.overlay.fresh_vectors[1], np.ones(8, np.float32))


def test_an_upsert_and_a_retirement_of_one_id_in_one_delta_is_an_upsert() -> None:
    index = build_index(_unit(10, 4, 0), np.arange(10), "HNSW8")
    edit = edit_index(
        index, np.arange(10), Overlay.empty(4), np.array([2]), _unit(1, 4, 1), np.array([2])
    )
    assert edit.overlay.fresh_ids.tolist() == [2] and len(edit.overlay.tombstones) == 0


def _live_vectors(
    index: object, n_held: int, overlay: Overlay, live: dict[int, np.ndarray]
) -> dict[int, np.ndarray]:
    """What search sees: the index's unblocked vectors, then the fresh ones."""
    blocked = set(overlay.tombstones.tolist()) | set(overlay.fresh_ids.tolist())
    inner = index.index  # type: ignore[attr-defined]
    seen: dict[int, np.ndarray] = {}
    for pos in range(n_held):
        item = int(index.id_map.at(pos))  # type: ignore[attr-defined]
        if item not in blocked:
            assert item not in seen
            seen[item] = inner.reconstruct(pos)
    for item, vec in zip(overlay.fresh_ids.tolist(), overlay.fresh_vectors, strict=True):
        assert item not in seen
        seen[item] = vec
    assert seen.keys() == live.keys()
    return seen


def test_random_edits_keep_every_live_item_once_with_its_current_vector() -> None:
    """50 random deltas of creations, updates (of live, fresh and retired items) and
    retirements on HNSW: what search sees always equals the catalogue's current state."""
    rng = np.random.default_rng(7)
    d, n = 6, 200
    vectors = _unit(n, d, 0)
    index = build_index(vectors, np.arange(n), "HNSW8")
    live = {i: vectors[i] for i in range(n)}
    held = np.arange(n, dtype=np.int64)
    overlay = Overlay.empty(d)
    next_id = n
    for step in range(50):
        known = np.array(sorted(held.tolist()))
        old = rng.choice(known, size=int(rng.integers(0, 8)), replace=False)
        new = np.arange(next_id, next_id + int(rng.integers(0, 4)))
        next_id += len(new)
        upsert = np.unique(np.concatenate([old, new])).astype(np.int64)
        up_vecs = _unit(len(upsert), d, 100 + step)
        retire = rng.choice(known, size=int(rng.integers(0, 5)), replace=False).astype(np.int64)
        edit = edit_index(index, held, overlay, upsert, up_vecs, retire)
        overlay = edit.overlay
        for i in retire.tolist():
            live.pop(i, None)
        live.update(zip(upsert.tolist(), up_vecs, strict=True))
        held = np.union1d(held, upsert)
        assert index.ntotal == len(held)
        assert not set(overlay.tombstones.tolist()) & set(overlay.fresh_ids.tolist())
        seen = _live_vectors(index, index.ntotal, overlay, live)
        for item, vec in live.items():
            np.testing.assert_allclose(seen[item], vec, atol=1e-6, err_msg=f"item {item}")


def test_an_overlay_wants_a_rebuild_past_its_bounds() -> None:
    def overlay(tomb: int, fresh: int) -> Overlay:
        return Overlay(np.arange(tomb), np.arange(fresh) + 10**7, np.zeros((fresh, 1), np.float32))

    assert not overlay(10, 10).wants_rebuild(1000)
    assert overlay(int(BLOCKED_MAX_SHARE * 1000) + 1, 0).wants_rebuild(1000)
    assert overlay(0, FRESH_MAX + 1).wants_rebuild(10**8)


def test_a_removable_index_folds_an_overlay_it_inherits() -> None:
    index = build_index(_unit(20, 4, 0), np.arange(20), "Flat")
    fresh = _unit(1, 4, 9)
    inherited = Overlay(np.array([3]), np.array([5]), fresh)
    edit = edit_index(index, np.arange(20), inherited, NONE, np.zeros((0, 4), np.float32), NONE)
    assert index.ntotal == 19 and edit.overlay.blocked == 0
    _, found = index.search(fresh, 1)
    assert found[0, 0] == 5


def test_duplicate_upsert_ids_are_refused() -> None:
    index = build_index(_unit(10, 8, 0), np.arange(10), "Flat")
    with pytest.raises(ValueError, match="unique"):
        edit_index(index, np.arange(10), Overlay.empty(8), np.array([20, 20]), _unit(2, 8, 1), NONE)

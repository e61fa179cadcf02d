"""Incremental edits of a built Faiss index: upsert and retire items without a rebuild.

Indexes that can remove vectors (Flat under an ID map, IVF with a direct map) get true
upserts (remove the old vector, then add) and removals. Indexes that cannot (HNSW,
refined IVF-PQ) keep what search must correct in an ``Overlay``:

- a retired item's vector stays in the index as a *tombstone* that search filters out;
- an updated item's old vector stays too, blocked like a tombstone, and its current
  vector joins the overlay's *fresh* vectors, which search scans exactly beside the index
  and merges by score (``add_with_ids`` would store a second vector under the same ID).

Both grow until the index is rebuilt (a nightly, or a compaction once
``Overlay.wants_rebuild``); at 50,000 fresh vectors of 64 floats a request costs ~0.5 ms
on one core against ~0.12 ms without an overlay (docs/deltas.md), hence the bound.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import faiss
import numpy as np
import numpy.typing as npt

from model.ids import isin_sorted, union_sorted

__all__ = ["IndexEdit", "Overlay", "edit_index", "supports_remove"]

log = logging.getLogger(__name__)

# Past these, a compaction rebuilds the index rather than carry the overlay on: the fresh
# scan's cost per query grows with its size, and every blocked vector is search work lost.
FRESH_MAX: Final = 50_000
BLOCKED_MAX_SHARE: Final = 0.10


@dataclass(frozen=True)
class Overlay:
    """What search corrects in an index that cannot remove or replace vectors.

    ``tombstones``: (T,) sorted retired IDs the index still holds. ``fresh_ids``: (F,)
    sorted live IDs whose vector in the index is stale (blocked there like tombstones);
    ``fresh_vectors``: (F, D) float32, their current vectors. The two ID sets are
    disjoint, and both are held by the index.
    """

    tombstones: npt.NDArray[np.int64]
    fresh_ids: npt.NDArray[np.int64]
    fresh_vectors: npt.NDArray[np.float32]

    @classmethod
    def empty(cls, dim: int) -> Overlay:
        none = np.empty(0, np.int64)
        return cls(none, none, np.empty((0, dim), np.float32))

    @property
    def blocked(self) -> int:
        """How many of the index's vectors search must skip (tombstones + stale)."""
        return len(self.tombstones) + len(self.fresh_ids)

    def wants_rebuild(self, n_items: int) -> bool:
        """Whether the index should rather be rebuilt over ``n_items`` live items."""
        return len(self.fresh_ids) > FRESH_MAX or self.blocked > BLOCKED_MAX_SHARE * max(n_items, 1)

    def after(
        self,
        held: npt.NDArray[np.int64],
        upsert_ids: npt.NDArray[np.int64],
        upsert_vectors: npt.NDArray[np.float32],
        retire_ids: npt.NDArray[np.int64],
    ) -> tuple[Overlay, npt.NDArray[np.bool_]]:
        """The overlay after a delta on an index without removal, and the (n,) mask of the
        upserts the index must add (those it does not hold yet).

        An upsert of a held ID (live, stale or a tombstone) makes it fresh; a retirement
        of a held ID makes it a tombstone (and no longer fresh). An ID both upserted and
        retired in one delta is upserted, as the item tables do (``core.deltas``)."""
        in_held = isin_sorted(upsert_ids, held)
        retire = np.setdiff1d(retire_ids[isin_sorted(retire_ids, held)], upsert_ids)
        changed = np.union1d(upsert_ids[in_held], retire)
        keep = ~isin_sorted(self.fresh_ids, changed)
        ids = np.concatenate([self.fresh_ids[keep], upsert_ids[in_held]])
        vectors = np.concatenate([self.fresh_vectors[keep], upsert_vectors[in_held]])
        order = np.argsort(ids, kind="stable")
        tombstones = union_sorted(self.tombstones, retire) if len(retire) else self.tombstones
        revived = upsert_ids[in_held]
        if len(revived) and len(tombstones):
            tombstones = tombstones[~isin_sorted(tombstones, np.sort(revived))]
        overlay = Overlay(
            np.ascontiguousarray(tombstones, np.int64),
            np.ascontiguousarray(ids[order], np.int64),
            np.ascontiguousarray(vectors[order], np.float32),
        )
        return overlay, ~in_held


@dataclass(frozen=True)
class IndexEdit:
    """What `edit_index` did; `overlay` is the index's full overlay afterwards."""

    removed: int
    added: int
    overlay: Overlay


def supports_remove(index: faiss.Index) -> bool:
    """Whether `index.remove_ids` works: Flat (under IDMap/IDMap2) and IVF indexes."""
    if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2):
        return supports_remove(faiss.downcast_index(index.index))
    return isinstance(index, faiss.IndexFlat | faiss.IndexIVF)


def edit_index(
    index: faiss.Index,
    held: npt.NDArray[np.int64],
    overlay: Overlay,
    upsert_ids: npt.NDArray[np.int64],
    upsert_vectors: npt.NDArray[np.float32],
    retire_ids: npt.NDArray[np.int64],
) -> IndexEdit:
    """Apply upserts and retirements to `index` in place.

    Args:
        index: an index holding exactly the IDs `held` (live items and tombstones).
        held: (H,) sorted IDs the index holds.
        overlay: the index's tombstones and fresh vectors before the edit.
        upsert_ids: (n,) unique IDs to insert or replace; (n, D) `upsert_vectors`,
            float32 item-tower outputs.
        retire_ids: (m,) IDs to take out of results; IDs not held are ignored.

    Returns the counts and the overlay afterwards (always empty for indexes that remove).
    """
    upsert_ids = np.ascontiguousarray(upsert_ids, np.int64)
    retire_ids = np.ascontiguousarray(retire_ids, np.int64)
    vectors = np.ascontiguousarray(upsert_vectors, np.float32)
    if vectors.shape != (len(upsert_ids), index.d):
        raise ValueError(f"upsert vectors {vectors.shape} != ({len(upsert_ids)}, {index.d})")
    if len(np.unique(upsert_ids)) != len(upsert_ids):
        raise ValueError("upsert IDs must be unique (add_with_ids would store duplicates)")
    if not supports_remove(index):
        after, add = overlay.after(held, upsert_ids, vectors, retire_ids)
        if add.any():
            index.add_with_ids(np.ascontiguousarray(vectors[add]), upsert_ids[add])
        return IndexEdit(0, int(add.sum()), after)
    # An overlay left by an earlier index of another type is folded in: this one can
    # remove, so its tombstones go and its fresh vectors replace the stale ones.
    if len(overlay.fresh_ids):
        stay = ~isin_sorted(overlay.fresh_ids, union_sorted(np.sort(upsert_ids), retire_ids))
        upsert_ids = np.concatenate([upsert_ids, overlay.fresh_ids[stay]])
        vectors = np.concatenate([vectors, overlay.fresh_vectors[stay]])
    gone = np.union1d(np.union1d(upsert_ids, retire_ids), overlay.tombstones)
    gone = gone[isin_sorted(gone, held)]
    # faiss's stubs only list the IDSelector overload; the wrapper takes an id array.
    removed = int(index.remove_ids(gone)) if len(gone) else 0  # type: ignore[arg-type]
    if removed != len(gone):
        raise RuntimeError(f"index removed {removed} of {len(gone)} held IDs: it is not in sync")
    if len(upsert_ids):
        index.add_with_ids(vectors, upsert_ids)
    log.debug("index edit: removed %d, added %d", removed, len(upsert_ids))
    return IndexEdit(removed, len(upsert_ids), Overlay.empty(index.d))

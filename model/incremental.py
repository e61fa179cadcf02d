"""Incremental edits of a built Faiss index: upsert and retire items without a rebuild.

Indexes that can remove vectors (Flat under an ID map, IVF with a direct map) get true
upserts (remove the old vector, then add) and removals. Indexes that cannot (HNSW,
refined IVF-PQ) keep retired vectors and report them as *tombstones* that search must
filter out; an upsert of an ID such an index already holds cannot be done in place
(`add_with_ids` would store a second vector under the same ID), so it raises
`RebuildRequired` and the caller rebuilds from the embeddings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import faiss
import numpy as np
import numpy.typing as npt

from model.ids import isin_sorted

__all__ = ["IndexEdit", "RebuildRequired", "edit_index", "supports_remove"]

log = logging.getLogger(__name__)


class RebuildRequired(RuntimeError):
    """The index cannot replace vectors it holds; rebuild it from the embeddings."""


@dataclass(frozen=True)
class IndexEdit:
    """What `edit_index` did; `tombstones` is the index's full, sorted tombstone list."""

    removed: int
    added: int
    tombstones: npt.NDArray[np.int64]


def supports_remove(index: faiss.Index) -> bool:
    """Whether `index.remove_ids` works: Flat (under IDMap/IDMap2) and IVF indexes."""
    if isinstance(index, faiss.IndexIDMap | faiss.IndexIDMap2):
        return supports_remove(faiss.downcast_index(index.index))
    return isinstance(index, faiss.IndexFlat | faiss.IndexIVF)


def edit_index(
    index: faiss.Index,
    held: npt.NDArray[np.int64],
    tombstones: npt.NDArray[np.int64],
    upsert_ids: npt.NDArray[np.int64],
    upsert_vectors: npt.NDArray[np.float32],
    retire_ids: npt.NDArray[np.int64],
) -> IndexEdit:
    """Apply upserts and retirements to `index` in place.

    Args:
        index: an index holding exactly the IDs `held` (live items and tombstones).
        held: (H,) sorted IDs the index holds.
        tombstones: (T,) sorted IDs among `held` that are retired (filtered at search).
        upsert_ids: (n,) unique IDs to insert or replace; (n, D) `upsert_vectors`,
            float32 item-tower outputs.
        retire_ids: (m,) IDs to take out of results; IDs not held are ignored.

    Returns the counts and the new tombstone list (always empty for indexes that remove).
    Raises `RebuildRequired` for an upsert of a held ID on an index that cannot remove.
    """
    upsert_ids = np.ascontiguousarray(upsert_ids, np.int64)
    retire_ids = np.ascontiguousarray(retire_ids, np.int64)
    vectors = np.ascontiguousarray(upsert_vectors, np.float32)
    if vectors.shape != (len(upsert_ids), index.d):
        raise ValueError(f"upsert vectors {vectors.shape} != ({len(upsert_ids)}, {index.d})")
    if len(np.unique(upsert_ids)) != len(upsert_ids):
        raise ValueError("upsert IDs must be unique (add_with_ids would store duplicates)")
    if not supports_remove(index):
        if isin_sorted(upsert_ids, held).any():
            raise RebuildRequired(
                f"{type(index).__name__} cannot remove vectors; replacing held items needs "
                "a rebuild"
            )
        live_retired = retire_ids[isin_sorted(retire_ids, held)]
        if len(upsert_ids):
            index.add_with_ids(vectors, upsert_ids)
        new_tombstones = np.union1d(tombstones, live_retired).astype(np.int64)
        return IndexEdit(0, len(upsert_ids), new_tombstones)
    # Tombstones left by an earlier index of another type go too: this one can remove.
    gone = np.union1d(np.union1d(upsert_ids, retire_ids), tombstones)
    gone = gone[isin_sorted(gone, held)]
    # faiss's stubs only list the IDSelector overload; the wrapper takes an id array.
    removed = int(index.remove_ids(gone)) if len(gone) else 0  # type: ignore[arg-type]
    if removed != len(gone):
        raise RuntimeError(f"index removed {removed} of {len(gone)} held IDs: it is not in sync")
    if len(upsert_ids):
        index.add_with_ids(vectors, upsert_ids)
    log.debug("index edit: removed %d, added %d", removed, len(upsert_ids))
    return IndexEdit(removed, len(upsert_ids), np.empty(0, np.int64))

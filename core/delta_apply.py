"""Applying deltas (``core.deltas``) to what a server holds in memory: the item columns of
its serving tables, its Faiss index (edited in place) and the index's overlay.

Indexes that can remove vectors (Flat, IVF) get true upserts and removals; the others
(HNSW, refined IVF-PQ) keep a retired vector as a tombstone that every search filters
out, and an updated item's current vector in the overlay's fresh vectors, searched
exactly beside the index (``model.incremental.Overlay``). Nothing is rebuilt here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import faiss
import numpy as np
import numpy.typing as npt

from core.deltas import Chain, ItemDelta, apply_rows, read_delta
from core.versionio import ServingTables, read_embeddings
from model.ids import union_sorted
from model.incremental import Overlay, edit_index

__all__ = ["ServedItems", "apply_chain", "apply_delta", "chain_vectors"]


@dataclass(frozen=True)
class ServedItems:
    """The item side of a server's state after some deltas: its tables (item columns
    updated), the index it edited and that index's overlay."""

    tables: ServingTables
    index: faiss.Index
    overlay: Overlay


def apply_delta(items: ServedItems, delta: ItemDelta) -> ServedItems:
    """``items`` after ``delta``: the index is edited in place (so the caller must own
    it); the tables and the overlay are new arrays."""
    t = items.tables
    tomb = items.overlay.tombstones
    held = union_sorted(t.item_id, tomb) if len(tomb) else t.item_id
    item_id, (id_row, category, content) = apply_rows(
        t.item_id,
        [t.item_id_row, t.category, t.content],
        delta.item_id,
        [delta.id_row, delta.category, delta.content],
        delta.retired_id,
    )
    tables = replace(t, item_id=item_id, item_id_row=id_row, category=category, content=content)
    edit = edit_index(
        items.index, held, items.overlay, delta.item_id, delta.vectors, delta.retired_id
    )
    return ServedItems(tables, items.index, edit.overlay)


def apply_chain(items: ServedItems, chain: Chain) -> ServedItems:
    """``items`` (the chain's base, loaded) after every delta of ``chain``, in order."""
    for d in chain.deltas:
        items = apply_delta(items, read_delta(d.path))
    return items


def chain_vectors(
    chain: Chain,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(I,) IDs and (I, D) vectors ``chain.head`` serves: the base's embeddings, then
    each delta's."""
    ids, vectors = read_embeddings(chain.base.path)
    for d in chain.deltas:
        delta = read_delta(d.path)
        ids, (vectors,) = apply_rows(
            ids, [vectors], delta.item_id, [delta.vectors], delta.retired_id
        )
    return ids, vectors

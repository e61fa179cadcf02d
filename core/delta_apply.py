"""Applying deltas (``core.deltas``) to what a server holds in memory: the item columns of
its serving tables, its Faiss index (edited in place) and its tombstones.

Indexes that can remove vectors (Flat, IVF) get true upserts and removals; the others
(HNSW, refined IVF-PQ) keep a retired vector as a tombstone that every search filters
out. An upsert of an item such an index already holds cannot be done in place (the index
would hold two vectors under one ID), so the index is rebuilt from the chain's vectors
with the base's recipe: rare (an update of an existing item on such an index), and never
silent (logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import faiss
import numpy as np
import numpy.typing as npt

from core.catalogue_apply import IndexRecipe, rebuild_index
from core.deltas import Chain, ItemDelta, apply_rows, read_delta
from core.versionio import ServingTables, read_embeddings
from model.ids import union_sorted
from model.incremental import RebuildRequired, edit_index

__all__ = ["ServedItems", "apply_chain", "apply_delta"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedItems:
    """The item side of a server's state after some deltas: its tables (item columns
    updated), the index it edited and the tombstones that index still holds."""

    tables: ServingTables
    index: faiss.Index
    tombstones: npt.NDArray[np.int64]


def apply_delta(
    items: ServedItems, delta: ItemDelta, rebuild: IndexRecipe | None, vectors_of: Chain | None
) -> ServedItems:
    """``items`` after ``delta``: the index is edited in place (so the caller must own
    it); the tables and tombstones are new arrays. ``rebuild`` and ``vectors_of`` (the
    chain up to and including this delta) are what a rebuild needs when the index cannot
    replace a vector it holds; without them that case raises RebuildRequired."""
    t = items.tables
    held = union_sorted(t.item_id, items.tombstones) if len(items.tombstones) else t.item_id
    item_id, (id_row, category, content) = apply_rows(
        t.item_id,
        [t.item_id_row, t.category, t.content],
        delta.item_id,
        [delta.id_row, delta.category, delta.content],
        delta.retired_id,
    )
    tables = replace(t, item_id=item_id, item_id_row=id_row, category=category, content=content)
    try:
        edit = edit_index(
            items.index, held, items.tombstones, delta.item_id, delta.vectors, delta.retired_id
        )
    except RebuildRequired as e:
        if rebuild is None or vectors_of is None:
            raise
        log.warning("%s; rebuilding %s over %d items", e, rebuild.factory, len(item_id))
        ids, vectors = chain_vectors(vectors_of)
        return ServedItems(tables, rebuild_index(rebuild, ids, vectors), np.empty(0, np.int64))
    return ServedItems(tables, items.index, edit.tombstones)


def apply_chain(items: ServedItems, chain: Chain, rebuild: IndexRecipe | None) -> ServedItems:
    """``items`` (the chain's base, loaded) after every delta of ``chain``, in order."""
    for i, d in enumerate(chain.deltas):
        upto = Chain(chain.base, chain.deltas[: i + 1])
        items = apply_delta(items, read_delta(d.path), rebuild, upto)
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

"""Delta versions: an items event published as only the items it changed.

A nightly (or a compaction) publishes a *complete* version: model, tables, embeddings and
index. An items event publishes a *delta* on top of CURRENT: the upserted items' rows and
vectors and the IDs it retires (``VersionFiles.DELTA_*``), its catalogue state, and a
manifest whose lineage names its parent and whose ``extra["delta"]`` names the complete
version at the bottom of its chain (``base``) and its ``depth`` (1 on a complete version).
It goes through the same compare-and-swap as any version and carries only its own
checksums: the base's files are neither rewritten nor re-hashed.

Reading version V means reading its chain: the complete version under it, then each
delta from the bottom up, each applied exactly once, in order (``resolve_chain``). Every
delta was embedded with the base's model, so a chain never mixes models; a nightly starts
a new chain.

Plain functions, no Prefect, no I/O outside the version folders they are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from model.ids import isin_sorted
from storage import (
    ITEM_EMBEDDINGS,
    VERSION_ITEMS,
    VERSION_TOMBSTONES,
    VersionFiles,
    arrow_to_vectors,
    read_table,
    vectors_to_arrow,
    write_table,
)

# The chain of versions a delta is read on (storage knows it from the manifests).
from storage.chains import Chain, delta_info, depth_of, is_delta, resolve_chain, verify_chain

__all__ = [
    "DELTA_FILES",
    "Chain",
    "ItemDelta",
    "ItemRows",
    "apply_rows",
    "delta_info",
    "depth_of",
    "is_delta",
    "read_delta",
    "resolve_chain",
    "served_rows",
    "verify_chain",
    "write_delta",
]

# What a delta version must hold (its manifest is added by publish).
DELTA_FILES: Final = (
    VersionFiles.DELTA_ITEMS,
    VersionFiles.DELTA_EMBEDDINGS,
    VersionFiles.DELTA_RETIRED,
    VersionFiles.CATALOGUE,
)


@dataclass(frozen=True)
class ItemDelta:
    """The items one delta changes: n upserted (sorted by ID, with their version-table
    row, tower ID row, category, C content floats and D-dim vector) and m retired IDs
    (sorted; only IDs its parent served)."""

    item_id: npt.NDArray[np.int64]  # (n,)
    id_row: npt.NDArray[np.int64]  # (n,) tower ID row, 0 = unknown
    category: npt.NDArray[np.int32]  # (n,)
    content: npt.NDArray[np.float32]  # (n, C)
    vectors: npt.NDArray[np.float32]  # (n, D) item-tower outputs
    retired_id: npt.NDArray[np.int64]  # (m,)

    def __post_init__(self) -> None:
        n = len(self.item_id)
        shapes = (len(self.id_row), len(self.category), len(self.content), len(self.vectors))
        if any(s != n for s in shapes):
            raise ValueError(f"delta columns have {shapes} rows, not {n}")
        for name, ids in (("upserted", self.item_id), ("retired", self.retired_id)):
            if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
                raise ValueError(f"delta {name} IDs must be sorted and unique")
        if isin_sorted(self.retired_id, self.item_id).any():
            raise ValueError("an item is both upserted and retired in one delta")


@dataclass(frozen=True)
class ItemRows:
    """Served items, sorted by ID: (I,) IDs and their (I,) tower ID rows."""

    item_id: npt.NDArray[np.int64]
    id_row: npt.NDArray[np.int64]

    def lookup(
        self, ids: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """For sorted ``ids``: which are served, and their tower ID rows (0 where not)."""
        known = isin_sorted(ids, self.item_id)
        pos = np.minimum(np.searchsorted(self.item_id, ids), max(len(self.item_id) - 1, 0))
        rows = np.where(known, self.id_row[pos] if len(self.item_id) else 0, 0)
        return known, rows.astype(np.int64)


def write_delta(folder: Path, delta: ItemDelta) -> None:
    """Write ``delta``'s three tables into a staged delta version ``folder``."""
    write_table(
        folder / VersionFiles.DELTA_ITEMS,
        pa.table(
            {
                "item_id": delta.item_id,
                "id_row": delta.id_row,
                "category": delta.category,
                "content": vectors_to_arrow(delta.content),
            }
        ),
        VERSION_ITEMS,
    )
    write_table(
        folder / VersionFiles.DELTA_EMBEDDINGS,
        pa.table({"item_id": delta.item_id, "embedding": vectors_to_arrow(delta.vectors)}),
        ITEM_EMBEDDINGS,
    )
    write_table(
        folder / VersionFiles.DELTA_RETIRED,
        pa.table({"item_id": delta.retired_id}),
        VERSION_TOMBSTONES,
    )


def read_delta(folder: Path) -> ItemDelta:
    """The delta a version folder holds; ValueError if its tables disagree."""
    items = read_table(folder / VersionFiles.DELTA_ITEMS, VERSION_ITEMS)
    vecs = read_table(folder / VersionFiles.DELTA_EMBEDDINGS, ITEM_EMBEDDINGS)
    retired = read_table(folder / VersionFiles.DELTA_RETIRED, VERSION_TOMBSTONES)
    item_id = np.asarray(items.column("item_id").to_numpy(), np.int64)
    if not np.array_equal(np.asarray(vecs.column("item_id").to_numpy(), np.int64), item_id):
        raise ValueError(f"{folder}: the delta's items and vectors list different IDs")
    return ItemDelta(
        item_id=item_id,
        id_row=np.asarray(items.column("id_row").to_numpy(), np.int64),
        category=np.asarray(items.column("category").to_numpy(), np.int32),
        content=arrow_to_vectors(items.column("content"), copy=True),
        vectors=arrow_to_vectors(vecs.column("embedding"), copy=True),
        retired_id=np.asarray(retired.column("item_id").to_numpy(), np.int64),
    )


def apply_rows(
    item_id: npt.NDArray[np.int64],
    columns: Sequence[npt.NDArray[Any]],
    delta_id: npt.NDArray[np.int64],
    delta_columns: Sequence[npt.NDArray[Any]],
    retired_id: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], list[npt.NDArray[Any]]]:
    """Sorted ``item_id`` with parallel ``columns`` after a delta (``delta_id`` sorted and
    unique): rows of upserted or retired IDs go, the delta's rows come in, and all stay
    sorted by ID. O(I) copies and O(n log I) searches, no sort of the whole catalogue: a
    server applies this per delta to a million rows."""
    gone = np.union1d(delta_id, retired_id)
    at = np.searchsorted(item_id, gone)
    found = at < len(item_id)
    found[found] = item_id[at[found]] == gone[found]
    drop = at[found]
    ids = np.delete(item_id, drop)
    ins = np.searchsorted(ids, delta_id)
    return np.insert(ids, ins, delta_id), [
        np.insert(np.delete(c, drop, axis=0), ins, d, axis=0)
        for c, d in zip(columns, delta_columns, strict=True)
    ]


def served_rows(chain: Chain) -> ItemRows:
    """The items ``chain.head`` serves with their tower ID rows: the base's items table
    (two columns read), then each delta. The caller verified what it relies on."""
    table = read_table(
        chain.base.file(VersionFiles.ITEMS), VERSION_ITEMS, columns=["item_id", "id_row"]
    )
    ids = np.asarray(table.column("item_id").to_numpy(), np.int64)
    rows = np.asarray(table.column("id_row").to_numpy(), np.int64)
    for d in chain.deltas:
        delta = read_delta(d.path)
        ids, (rows,) = apply_rows(ids, [rows], delta.item_id, [delta.id_row], delta.retired_id)
    return ItemRows(ids, rows)

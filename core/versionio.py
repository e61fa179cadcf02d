"""What a published version holds, as the model and the service read it: serving tables
(users, items, recent items), interaction history, raw-ID maps, the model and the item
embeddings. Plain functions (no Prefect); the snapshot side lives in ``core.dataio``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from model.dataset import Dataset, Vocabulary
from model.embed import embed_users
from model.features import category_rows
from model.history import RaggedRows, latest_items
from model.towers import TwoTower, load_two_tower
from storage import (
    ITEM_EMBEDDINGS,
    VersionFiles,
    arrow_to_vectors,
    iter_batches,
    load_model,
    read_num_rows,
    read_table,
    vectors_to_arrow,
    write_table,
)
from storage.schemas import (
    ITEM_IDS,
    USER_IDS,
    VERSION_HISTORY,
    VERSION_ITEMS,
    VERSION_RECENT,
    VERSION_USERS,
)

__all__ = [
    "History",
    "RawIds",
    "ServingTables",
    "copy_id_maps",
    "embed_served_users",
    "load_served_model",
    "read_embeddings",
    "read_history",
    "read_raw_ids",
    "read_serving_tables",
    "write_embeddings",
    "write_serving_tables",
]


def _np(table: pa.Table, name: str) -> npt.NDArray[Any]:
    return table.column(name).to_numpy()


def write_serving_tables(
    folder: Path, data: Dataset, vocab: Vocabulary, history_len: int = 0
) -> None:
    """The user, item and history tables a version serves from (with each row's tower ID
    row; the history holds every interaction of the snapshot, so serving can exclude it).

    With the behaviour-history feature (``history_len`` > 0) also recent.parquet: each
    user's latest ``history_len`` item IDs, most recent first: what the user tower reads
    online.
    """
    everything = np.ones(len(data.inter_user), bool)
    seen = data.sets(everything)
    has = seen.lengths() > 0
    offsets = np.concatenate([[0], np.cumsum(seen.lengths()[has])]).astype(np.int32)
    write_table(
        folder / VersionFiles.HISTORY,
        pa.table(
            {
                "user_id": data.user_id[has],
                "items": pa.ListArray.from_arrays(
                    pa.array(offsets), pa.array(data.item_id[seen.indices])
                ),
            }
        ),
        VERSION_HISTORY,
    )
    if history_len > 0:
        recent = latest_items(
            data.inter_user, data.inter_item, data.inter_ts, everything, history_len, data.n_users
        )
        lengths = recent.lengths()
        keep = lengths > 0  # rows in user order, most recent first per user
        offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int32)
        write_table(
            folder / VersionFiles.RECENT,
            pa.table(
                {
                    "user_id": data.user_id[keep],
                    "items": pa.ListArray.from_arrays(
                        pa.array(offsets), pa.array(data.item_id[recent.values])
                    ),
                }
            ),
            VERSION_RECENT,
        )
    write_table(
        folder / VersionFiles.USERS,
        pa.table(
            {
                "user_id": data.user_id,
                "id_row": vocab.user_id_row,
                "profile": vectors_to_arrow(data.profile),
            }
        ),
        VERSION_USERS,
    )
    write_table(
        folder / VersionFiles.ITEMS,
        pa.table(
            {
                "item_id": data.item_id,
                "id_row": vocab.item_id_row,
                "category": data.category,
                "content": vectors_to_arrow(data.content),
            }
        ),
        VERSION_ITEMS,
    )


@dataclass(frozen=True)
class ServingTables:
    """A version's user and item features, sorted by ID. U users, I items."""

    user_id: npt.NDArray[np.int64]  # (U,)
    user_id_row: npt.NDArray[np.int64]  # (U,) tower ID rows, 0 = unknown
    profile: npt.NDArray[np.float32]  # (U, P)
    item_id: npt.NDArray[np.int64]  # (I,)
    item_id_row: npt.NDArray[np.int64]  # (I,)
    category: npt.NDArray[np.int32]  # (I,)
    content: npt.NDArray[np.float32]  # (I, C)
    # U ragged rows: item ID rows of each user's latest items, most recent first, at most
    # the model's history_len (0 = an item the version does not carry), for models with
    # the behaviour-history feature; None for models without it.
    recent: RaggedRows | None = None

    def user_history(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64] | None:
        """(n, W) history rows of users at ``positions`` (-1 = unknown user: no history),
        0-padded to the longest of them (W >= 1)."""
        if self.recent is None:
            return None
        return self.recent.dense(positions, pad=0)

    def item_category_rows(self, n_categories: int) -> npt.NDArray[np.int64]:
        return category_rows(self.category, n_categories)


def read_serving_tables(folder: Path, history_len: int = 0) -> ServingTables:
    """A version's users.parquet and items.parquet as writable arrays (they feed torch);
    with ``history_len`` > 0 also recent.parquet as ragged item rows, one per user."""
    users = read_table(folder / VersionFiles.USERS, VERSION_USERS)
    items = read_table(folder / VersionFiles.ITEMS, VERSION_ITEMS)
    tables = ServingTables(
        user_id=_np(users, "user_id").copy(),
        user_id_row=_np(users, "id_row").copy(),
        profile=arrow_to_vectors(users.column("profile"), copy=True),
        item_id=_np(items, "item_id").copy(),
        item_id_row=_np(items, "id_row").copy(),
        category=_np(items, "category").copy(),
        content=arrow_to_vectors(items.column("content"), copy=True),
    )
    if history_len == 0:
        return tables
    return replace(tables, recent=_read_recent(folder, tables, history_len))


def _read_recent(folder: Path, tables: ServingTables, history_len: int) -> RaggedRows:
    """recent.parquet -> one ragged row of item ID rows per user of the users table, most
    recent first (empty for a user without one); items the version does not carry map
    to 0."""
    path = folder / VersionFiles.RECENT
    if not path.is_file():
        raise ValueError(f"{path} is missing: the model reads each user's last {history_len} items")
    table = read_table(path, VERSION_RECENT)
    lists = table.column("items").combine_chunks()
    lengths = np.diff(lists.offsets.to_numpy().astype(np.int64))
    if len(lengths) and lengths.max() > history_len:
        raise ValueError(
            f"{path}: a user has {lengths.max()} recent items, the model reads {history_len}"
        )
    user_pos = np.searchsorted(tables.user_id, _np(table, "user_id"))
    user_pos = np.minimum(user_pos, len(tables.user_id) - 1)
    if not np.array_equal(tables.user_id[user_pos], _np(table, "user_id")):
        raise ValueError(f"{path} names users that are not in {VersionFiles.USERS}")
    if len(np.unique(user_pos)) != len(user_pos):
        raise ValueError(f"{path} holds a user twice")
    item_ids = lists.values.to_numpy().astype(np.int64)
    item_pos = np.minimum(np.searchsorted(tables.item_id, item_ids), len(tables.item_id) - 1)
    known = tables.item_id[item_pos] == item_ids
    item_rows = np.where(known, tables.item_id_row[item_pos], 0)
    # Each value goes to its user's row; a stable sort keeps each list's order.
    order = np.argsort(np.repeat(user_pos, lengths), kind="stable")
    per_user = np.zeros(len(tables.user_id), np.int64)
    per_user[user_pos] = lengths
    indptr = np.concatenate([[0], np.cumsum(per_user)]).astype(np.int64)
    return RaggedRows(indptr, np.ascontiguousarray(item_rows[order], np.int64))


@dataclass(frozen=True)
class History:
    """Per-user sorted item IDs, CSR-style: user ``user_id[r]`` saw
    ``item_ids[indptr[r]:indptr[r + 1]]``. R users with history, N interactions."""

    user_id: npt.NDArray[np.int64]  # (R,) sorted
    indptr: npt.NDArray[np.int64]  # (R+1,)
    item_ids: npt.NDArray[np.int64]  # (N,)

    def items_of(self, user_id: int) -> npt.NDArray[np.int64]:
        """Sorted item IDs the user interacted with (empty when none)."""
        r = int(np.searchsorted(self.user_id, user_id))
        if r >= len(self.user_id) or self.user_id[r] != user_id:
            return np.empty(0, np.int64)
        return self.item_ids[self.indptr[r] : self.indptr[r + 1]]


def read_history(folder: Path) -> History:
    """A version's history.parquet as CSR arrays (one copy of the offsets, none of values)."""
    table = read_table(folder / VersionFiles.HISTORY, VERSION_HISTORY)
    items = table.column("items").combine_chunks()
    return History(
        user_id=_np(table, "user_id").copy(),
        indptr=items.offsets.to_numpy().astype(np.int64),
        item_ids=items.values.to_numpy().astype(np.int64),
    )


def embed_served_users(
    model: TwoTower, tables: ServingTables, positions: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """(n, D) vectors of the users at ``positions`` of a version's users table, as served
    (stored profile, ID row and, for history models, recent items)."""
    return embed_users(
        model,
        tables.user_id_row[positions],
        tables.profile[positions],
        tables.user_history(positions),
    )


def copy_id_maps(snapshot: Path, staging: Path) -> None:
    """Give a version its snapshot's raw-ID maps (imported data), so every output of that
    version can speak the raw IDs the data came with."""
    for spec in (USER_IDS, ITEM_IDS):
        if (snapshot / spec.file_name).is_file():
            write_table(staging / spec.file_name, read_table(snapshot / spec.file_name, spec), spec)


@dataclass(frozen=True)
class RawIds:
    """Raw IDs (text) of a version's stored int64 user and item IDs, sorted by stored ID."""

    user_id: npt.NDArray[np.int64]  # (U,)
    user_raw: npt.NDArray[np.object_]  # (U,) str
    item_id: npt.NDArray[np.int64]  # (I,)
    item_raw: npt.NDArray[np.object_]  # (I,) str

    def user(self, raw: str) -> int | None:
        """Stored ID of a raw user ID, or None when the version does not know it."""
        hits = np.flatnonzero(self.user_raw == raw)
        return int(self.user_id[hits[0]]) if len(hits) else None

    def items(self, ids: npt.ArrayLike) -> list[str]:
        """(n,) stored item IDs -> their raw IDs ("" for an ID the map lacks)."""
        arr = np.asarray(ids, np.int64)
        pos = np.minimum(np.searchsorted(self.item_id, arr), len(self.item_id) - 1)
        found = self.item_id[pos] == arr
        return [str(self.item_raw[p]) if f else "" for p, f in zip(pos, found, strict=True)]


def read_raw_ids(folder: Path) -> RawIds | None:
    """A version's raw-ID maps, or None for data whose IDs are already the raw ones."""
    if not all((folder / spec.file_name).is_file() for spec in (USER_IDS, ITEM_IDS)):
        return None
    users = read_table(folder / USER_IDS.file_name, USER_IDS).sort_by("id")
    items = read_table(folder / ITEM_IDS.file_name, ITEM_IDS).sort_by("id")
    return RawIds(
        user_id=_np(users, "id"),
        user_raw=np.array(users.column("raw_id").to_pylist(), object),
        item_id=_np(items, "id"),
        item_raw=np.array(items.column("raw_id").to_pylist(), object),
    )


def load_served_model(folder: Path) -> TwoTower:
    """The two-tower model saved in a version (or staging) folder, on CPU, in eval mode."""
    state, config = load_model(folder)
    return load_two_tower(config, state)


def write_embeddings(
    folder: Path, item_id: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]
) -> None:
    write_table(
        folder / VersionFiles.ITEM_EMBEDDINGS,
        pa.table({"item_id": item_id, "embedding": vectors_to_arrow(vectors)}),
        ITEM_EMBEDDINGS,
    )


def read_embeddings(folder: Path) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(I,) item IDs and (I, D) float32 vectors of a version."""
    # In row batches into writable arrays: the table is never held beside its copy.
    path = folder / VersionFiles.ITEM_EMBEDDINGS
    n = read_num_rows(path, ITEM_EMBEDDINGS)
    ids = np.empty(n, np.int64)
    vectors: npt.NDArray[np.float32] | None = None
    at = 0
    for batch in iter_batches(path, ITEM_EMBEDDINGS, batch_rows=1 << 16):
        end = at + batch.num_rows
        chunk = arrow_to_vectors(batch.column(1))
        if vectors is None:
            vectors = np.empty((n, chunk.shape[1]), np.float32)
        ids[at:end] = batch.column(0).to_numpy()
        vectors[at:end] = chunk
        at = end
    if vectors is None:  # no rows: the dimension comes from the schema
        table = read_table(path, ITEM_EMBEDDINGS)
        vectors = arrow_to_vectors(table.column("embedding"), copy=True)
    return ids, vectors

"""Conversions between stored tables and the model's in-memory arrays.

Plain functions shared by several tasks (no Prefect here): they read and write through
``storage`` and build ``model`` objects, so tasks stay short.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from model.dataset import Dataset, Vocabulary, make_split
from model.embed import embed_users
from model.features import category_rows
from model.history import history_at_end
from model.pipeline import Prepared, prepare
from model.synthetic import SyntheticData
from model.towers import TwoTower, load_two_tower
from storage import (
    CATEGORIES,
    IMPRESSIONS,
    INTERACTIONS,
    ITEM_EMBEDDINGS,
    ITEMS,
    TRUTH_ITEMS,
    TRUTH_USERS,
    USERS,
    SnapshotFiles,
    TableSpec,
    VersionFiles,
    arrow_to_vectors,
    load_model,
    read_json,
    read_table,
    vectors_to_arrow,
    write_json,
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
from tasks.config import DataConfig

__all__ = [
    "History",
    "RawIds",
    "ServingTables",
    "SnapshotData",
    "Truth",
    "copy_id_maps",
    "embed_served_users",
    "load_dataset",
    "load_impressions",
    "load_prepared",
    "load_served_model",
    "load_truth",
    "read_embeddings",
    "read_history",
    "read_raw_ids",
    "read_serving_tables",
    "snapshot_tables",
    "write_embeddings",
    "write_serving_tables",
    "write_synthetic",
]


def _np(table: pa.Table, name: str) -> npt.NDArray[Any]:
    return table.column(name).to_numpy()


class SnapshotData(Protocol):
    """What every snapshot source (generator, importer) provides, aligned by row."""

    # Read-only (frozen dataclasses satisfy it). Shapes: (U,), (U, P), (I,), (I,), (I, C),
    # n_categories names, then (N,) user IDs, item IDs and unix seconds.
    @property
    def user_id(self) -> npt.NDArray[np.int64]: ...
    @property
    def profile(self) -> npt.NDArray[np.float32]: ...
    @property
    def item_id(self) -> npt.NDArray[np.int64]: ...
    @property
    def category(self) -> npt.NDArray[np.int32]: ...
    @property
    def content(self) -> npt.NDArray[np.float32]: ...
    @property
    def category_names(self) -> list[str]: ...
    @property
    def inter_user(self) -> npt.NDArray[np.int64]: ...
    @property
    def inter_item(self) -> npt.NDArray[np.int64]: ...
    @property
    def inter_ts(self) -> npt.NDArray[np.int64]: ...


def snapshot_tables(data: SnapshotData) -> dict[TableSpec, dict[str, Any]]:
    """The columns of the four tables every snapshot has: users, items, categories and
    interactions (sources add their own, e.g. impressions or ID maps)."""
    return {
        USERS: {"user_id": data.user_id, "profile": vectors_to_arrow(data.profile)},
        ITEMS: {
            "item_id": data.item_id,
            "category": data.category,
            "content": vectors_to_arrow(data.content),
        },
        CATEGORIES: {
            "category": np.arange(len(data.category_names), dtype=np.int32),
            "name": data.category_names,
        },
        INTERACTIONS: {
            "user_id": data.inter_user,
            "item_id": data.inter_item,
            "timestamp": data.inter_ts,
        },
    }


def write_synthetic(folder: Path, data: SyntheticData, meta: dict[str, Any]) -> None:
    """Write every generator output as a table of the snapshot folder, then snapshot.json."""
    tables = {
        **snapshot_tables(data),
        IMPRESSIONS: {
            "user_id": data.imp_user,
            "item_id": data.imp_item,
            "timestamp": data.imp_ts,
            "label": data.imp_label,
        },
        TRUTH_USERS: {"user_id": data.user_id, "latent": vectors_to_arrow(data.user_latent)},
        TRUTH_ITEMS: {
            "item_id": data.item_id,
            "latent": vectors_to_arrow(data.item_latent),
            "log_popularity": data.log_popularity,
        },
    }
    for spec, columns in tables.items():
        write_table(folder / spec.file_name, pa.table(columns), spec)
    write_json(folder / SnapshotFiles.MANIFEST, meta)


def load_dataset(folder: Path) -> Dataset:
    """Users, items and interactions of a snapshot, sorted by ID (see ``Dataset``)."""
    users = read_table(folder / USERS.file_name, USERS)
    items = read_table(folder / ITEMS.file_name, ITEMS)
    cats = read_table(folder / CATEGORIES.file_name, CATEGORIES)
    inter = read_table(folder / INTERACTIONS.file_name, INTERACTIONS)
    return Dataset.from_raw(
        user_id=_np(users, "user_id"),
        profile=arrow_to_vectors(users.column("profile")),
        item_id=_np(items, "item_id"),
        category=_np(items, "category"),
        content=arrow_to_vectors(items.column("content")),
        n_categories=int(_np(cats, "category").max(initial=-1)) + 1,
        inter_user_id=_np(inter, "user_id"),
        inter_item_id=_np(inter, "item_id"),
        inter_ts=_np(inter, "timestamp"),
    )


def load_prepared(folder: Path, cfg: DataConfig) -> Prepared:
    """A snapshot's dataset, split by ``cfg``'s protocol, with the training vocabulary and
    feature tables: the same for every step that reads the snapshot with that config."""
    data = load_dataset(folder)
    split = make_split(
        cfg.protocol,
        data.inter_user,
        data.inter_ts,
        val_frac=cfg.val_frac,
        test_frac=cfg.test_frac,
        ratios=cfg.ratios,
        seed=cfg.split_seed,
    )
    return prepare(data, split)


def load_impressions(folder: Path) -> pa.Table:
    """The labelled impressions table of a snapshot (for the pointwise BCE mode)."""
    return read_table(folder / IMPRESSIONS.file_name, IMPRESSIONS)


@dataclass(frozen=True)
class Truth:
    """The generator's hidden world, aligned with ``Dataset`` positions."""

    user_latent: npt.NDArray[np.float32]  # (U, L)
    item_latent: npt.NDArray[np.float32]  # (I, L)
    log_popularity: npt.NDArray[np.float32]  # (I,)
    temperature: float


def load_truth(folder: Path, data: Dataset) -> Truth | None:
    """Ground truth of a synthetic snapshot, or None when the snapshot has none (real data)."""
    if not (folder / TRUTH_USERS.file_name).is_file():
        return None
    meta = read_json(folder / SnapshotFiles.MANIFEST)
    tu = read_table(folder / TRUTH_USERS.file_name, TRUTH_USERS)
    ti = read_table(folder / TRUTH_ITEMS.file_name, TRUTH_ITEMS)
    u_pos = data.user_positions(_np(tu, "user_id"))
    i_pos = data.item_positions(_np(ti, "item_id"))
    if (u_pos < 0).any() or (i_pos < 0).any():
        raise ValueError(f"{folder}: truth tables name IDs that are not in the snapshot")
    user_latent = np.empty((data.n_users, tu.column("latent").type.list_size), np.float32)
    item_latent = np.empty((data.n_items, ti.column("latent").type.list_size), np.float32)
    log_pop = np.empty(data.n_items, np.float32)
    user_latent[u_pos] = arrow_to_vectors(tu.column("latent"))
    item_latent[i_pos] = arrow_to_vectors(ti.column("latent"))
    log_pop[i_pos] = _np(ti, "log_popularity")
    return Truth(user_latent, item_latent, log_pop, float(meta["generator"]["temperature"]))


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
        recent = history_at_end(
            data.inter_user, data.inter_item, data.inter_ts, everything, history_len, data.n_users
        )
        lengths = (recent >= 0).sum(axis=1)
        keep = lengths > 0
        flat = recent[keep][recent[keep] >= 0]  # row-major: most recent first per user
        offsets = np.concatenate([[0], np.cumsum(lengths[keep])]).astype(np.int32)
        write_table(
            folder / VersionFiles.RECENT,
            pa.table(
                {
                    "user_id": data.user_id[keep],
                    "items": pa.ListArray.from_arrays(
                        pa.array(offsets), pa.array(data.item_id[flat])
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
    # (U, H) item ID rows of each user's latest H items (0 = none), for models with the
    # behaviour-history feature; None for models without it.
    recent: npt.NDArray[np.int64] | None = None

    def user_history(self, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64] | None:
        """(n, H) history rows of users at ``positions`` (-1 = unknown user: no history)."""
        if self.recent is None:
            return None
        rows = self.recent[np.maximum(positions, 0)]
        return np.where((positions >= 0)[:, None], rows, 0)

    def item_category_rows(self, n_categories: int) -> npt.NDArray[np.int64]:
        return category_rows(self.category, n_categories)


def read_serving_tables(folder: Path, history_len: int = 0) -> ServingTables:
    """A version's users.parquet and items.parquet as writable arrays (they feed torch);
    with ``history_len`` > 0 also recent.parquet as (U, history_len) item rows."""
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


def _read_recent(folder: Path, tables: ServingTables, history_len: int) -> npt.NDArray[np.int64]:
    """recent.parquet -> (U, H) item ID rows aligned with the users table, left-aligned in
    most recent first, 0-padded; items the version does not carry map to 0."""
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
    item_ids = lists.values.to_numpy().astype(np.int64)
    item_pos = np.minimum(np.searchsorted(tables.item_id, item_ids), len(tables.item_id) - 1)
    known = tables.item_id[item_pos] == item_ids
    item_rows = np.where(known, tables.item_id_row[item_pos], 0)
    out = np.zeros((len(tables.user_id), history_len), np.int64)
    slot = np.arange(len(item_ids)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[np.repeat(user_pos, lengths), slot] = item_rows
    return out


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
    table = read_table(folder / VersionFiles.ITEM_EMBEDDINGS, ITEM_EMBEDDINGS)
    return _np(table, "item_id"), arrow_to_vectors(table.column("embedding"), copy=True)

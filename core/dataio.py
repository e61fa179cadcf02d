"""Conversions between stored tables and the model's in-memory arrays.

Plain functions shared by several tasks (no Prefect here): they read and write through
``storage`` and build ``model`` objects, so tasks stay short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from core.config import DataConfig
from model.dataset import Dataset, make_split
from model.pipeline import Prepared, prepare
from model.synthetic import Events, EventTable, World, merged_chunks
from storage import (
    CATEGORIES,
    IMPRESSIONS,
    INTERACTIONS,
    ITEMS,
    TRUTH_ITEMS,
    TRUTH_USERS,
    USERS,
    SnapshotFiles,
    TableSpec,
    TableWriter,
    arrow_to_vectors,
    iter_batches,
    read_json,
    read_num_rows,
    read_table,
    vectors_to_arrow,
    write_table,
)

__all__ = [
    "CatalogueData",
    "SnapshotData",
    "Truth",
    "catalogue_tables",
    "events_tables",
    "impression_examples",
    "load_dataset",
    "load_impressions",
    "load_prepared",
    "load_truth",
    "snapshot_tables",
    "tables_events",
    "write_events",
    "write_world",
]


def _np(table: pa.Table, name: str) -> npt.NDArray[Any]:
    return table.column(name).to_numpy()


class CatalogueData(Protocol):
    """Users, items and categories, aligned by row (the generator's world, a snapshot)."""

    # Read-only (frozen dataclasses satisfy it). Shapes: (U,), (U, P), (I,), (I,), (I, C),
    # n_categories names.
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


class SnapshotData(CatalogueData, Protocol):
    """What every snapshot source (generator, importer) provides, aligned by row: the
    catalogue, then (N,) interaction user IDs, item IDs and unix seconds."""

    @property
    def inter_user(self) -> npt.NDArray[np.int64]: ...
    @property
    def inter_item(self) -> npt.NDArray[np.int64]: ...
    @property
    def inter_ts(self) -> npt.NDArray[np.int64]: ...


def catalogue_tables(data: CatalogueData) -> dict[TableSpec, dict[str, Any]]:
    """The columns of the users, items and categories tables."""
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
    }


def snapshot_tables(data: SnapshotData) -> dict[TableSpec, dict[str, Any]]:
    """The columns of the four tables every snapshot has: users, items, categories and
    interactions (sources add their own, e.g. impressions or ID maps)."""
    return {
        **catalogue_tables(data),
        INTERACTIONS: {
            "user_id": data.inter_user,
            "item_id": data.inter_item,
            "timestamp": data.inter_ts,
        },
    }


def write_world(folder: Path, world: World) -> None:
    """Write the generator's users, items and categories, and its hidden world (the truth
    tables), as tables of the snapshot folder."""
    tables = {
        **catalogue_tables(world),
        TRUTH_USERS: {"user_id": world.user_id, "latent": vectors_to_arrow(world.user_latent)},
        TRUTH_ITEMS: {
            "item_id": world.item_id,
            "latent": vectors_to_arrow(world.item_latent),
            "log_popularity": world.log_popularity,
        },
    }
    for spec, columns in tables.items():
        write_table(folder / spec.file_name, pa.table(columns), spec)


def events_tables(events: Events) -> dict[TableSpec, pa.Table]:
    """The interactions and impressions tables of ``events``."""
    return {
        INTERACTIONS: pa.table(
            {
                "user_id": events.inter_user,
                "item_id": events.inter_item,
                "timestamp": events.inter_ts,
            }
        ),
        IMPRESSIONS: pa.table(
            {
                "user_id": events.imp_user,
                "item_id": events.imp_item,
                "timestamp": events.imp_ts,
                "label": events.imp_label,
            }
        ),
    }


def tables_events(interactions: pa.Table, impressions: pa.Table) -> Events:
    """``events_tables`` read back: (interactions, impressions) as ``Events``."""
    return Events(
        inter_user=_np(interactions, "user_id"),
        inter_item=_np(interactions, "item_id"),
        inter_ts=_np(interactions, "timestamp"),
        imp_user=_np(impressions, "user_id"),
        imp_item=_np(impressions, "item_id"),
        imp_ts=_np(impressions, "timestamp"),
        imp_label=_np(impressions, "label"),
    )


def write_events(folder: Path, parts: Sequence[Events], chunk_rows: int = 1 << 20) -> None:
    """Write the generator's interactions and impressions as tables of the snapshot: the
    parts (each sorted by time, in block order) merged into one time-ordered log chunk by
    chunk (``model.synthetic.merged_chunks``), so memory holds the parts and one chunk."""
    columns = {INTERACTIONS: ("user", "item", "ts"), IMPRESSIONS: ("user", "item", "ts", "label")}
    for spec, names in columns.items():
        table: EventTable = "interactions" if spec is INTERACTIONS else "impressions"
        with TableWriter(folder / spec.file_name, spec) as writer:
            for chunk in merged_chunks(parts, table, chunk_rows):
                writer.write(
                    pa.table(
                        {col.name: chunk[n] for col, n in zip(spec.columns, names, strict=True)}
                    )
                )
            if writer.rows == 0:  # a world without events still gets its (empty) tables
                writer.write(pa.table({c.name: pa.array([], c.kind) for c in spec.columns}))


def load_dataset(folder: Path, batch_rows: int = 1 << 20) -> Dataset:
    """Users, items and interactions of a snapshot, sorted by ID (see ``Dataset``). The
    interactions are read in batches of ``batch_rows`` straight into their position
    arrays (``Dataset.from_batches``): the raw table is never held whole."""
    users = read_table(folder / USERS.file_name, USERS)
    items = read_table(folder / ITEMS.file_name, ITEMS)
    cats = read_table(folder / CATEGORIES.file_name, CATEGORIES)
    path = folder / INTERACTIONS.file_name
    batches = (
        (b.column(0).to_numpy(), b.column(1).to_numpy(), b.column(2).to_numpy())
        for b in iter_batches(path, INTERACTIONS, batch_rows=batch_rows)
    )
    return Dataset.from_batches(
        user_id=_np(users, "user_id"),
        profile=arrow_to_vectors(users.column("profile")),
        item_id=_np(items, "item_id"),
        category=_np(items, "category"),
        content=arrow_to_vectors(items.column("content")),
        n_categories=int(_np(cats, "category").max(initial=-1)) + 1,
        interactions=batches,
        n_interactions=read_num_rows(path, INTERACTIONS),
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


def impression_examples(folder: Path, prep: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impressions inside the training window whose user and item the vocabulary knows
    (the pointwise mode needs a global time cut: the temporal protocol)."""
    if prep.split.t_val is None:
        raise ValueError(
            f"loss 'bce' trains on impressions before the validation cut, which only the "
            f"'temporal' protocol has (got {prep.split.protocol!r})"
        )
    data, vocab = prep.data, prep.vocab
    imp = load_impressions(folder)
    ts = imp.column("timestamp").to_numpy()
    u_pos = data.user_positions(imp.column("user_id").to_numpy())
    i_pos = data.item_positions(imp.column("item_id").to_numpy())
    # Position -1 (not in the tables) indexes the last row; the mask below drops those.
    u, i = vocab.user_id_row[u_pos], vocab.item_id_row[i_pos]
    keep = (ts < prep.split.t_val) & (u_pos >= 0) & (i_pos >= 0) & (u > 0) & (i > 0)
    labels = imp.column("label").to_numpy()[keep].astype(np.float32)
    return u[keep], i[keep], labels

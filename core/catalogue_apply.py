"""Apply item catalogue changes to a version folder (staging only): embed upserted items
with the folder's model, rewrite its items and embeddings tables, edit its index.

Plain functions, no Prefect. A folder records the catalogue entries it includes in
`catalogue.json` (`{"seq": S, "applied_events": [...]}`); changes must start where the
folder stops (`changes.after == S`), so entries are applied exactly once and in order.
Files are replaced atomically, never written in place: staging folders hold hard links
to the parent version's files, which must stay intact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from core.versionio import load_served_model, read_embeddings, write_embeddings
from model.embed import embed_items
from model.features import category_rows
from model.ids import isin_sorted, union_sorted
from model.incremental import Overlay, edit_index
from model.index import build_index, set_index_params, set_search_params
from storage import (
    ITEM_EMBEDDINGS,
    VERSION_ITEMS,
    VERSION_TOMBSTONES,
    CatalogueChanges,
    VersionFiles,
    arrow_to_vectors,
    load_index,
    read_json,
    read_num_rows,
    read_table,
    save_index,
    vectors_to_arrow,
    write_json,
    write_table,
)

__all__ = [
    "ApplySummary",
    "IndexRecipe",
    "apply_changes",
    "read_catalogue_state",
    "read_overlay",
    "read_tombstones",
    "rebuild_index",
    "write_catalogue_state",
    "write_overlay",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexRecipe:
    """How to rebuild a folder's index when it cannot be edited in place (an upsert of a
    held item on an index without `remove_ids`)."""

    factory: str
    knob: str | None = None
    knob_value: int | None = None
    seed: int = 0
    # Every search parameter tuned (knob included); older manifests have the knob alone.
    params: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> IndexRecipe:
        """From an `IndexSummary` dump (a manifest's `extra["index"]`)."""
        return cls(
            summary["factory"],
            summary.get("knob"),
            summary.get("knob_value"),
            params=dict(summary.get("params") or {}),
        )


@dataclass(frozen=True)
class ApplySummary:
    """The folder after `apply_changes`: I items served, ``blocked`` index vectors search
    skips (tombstones and stale vectors of updated items), entries up to seq."""

    seq: int
    applied_events: tuple[str, ...]
    n_items: int
    upserted: int
    retired: int
    blocked: int
    rebuilt_index: bool


def read_catalogue_state(folder: Path) -> tuple[int, tuple[str, ...]]:
    """(seq included, events applied on top of the parent); (0, ()) when absent."""
    path = folder / VersionFiles.CATALOGUE
    if not path.is_file():
        return 0, ()
    data = read_json(path)
    return int(data["seq"]), tuple(data["applied_events"])


def write_catalogue_state(folder: Path, seq: int, applied_events: Sequence[str]) -> None:
    write_json(
        folder / VersionFiles.CATALOGUE, {"seq": seq, "applied_events": list(applied_events)}
    )


def read_tombstones(folder: Path) -> npt.NDArray[np.int64]:
    """(T,) sorted retired IDs the folder's index still holds (empty when none)."""
    path = folder / VersionFiles.TOMBSTONES
    if not path.is_file():
        return np.empty(0, np.int64)
    ids = read_table(path, VERSION_TOMBSTONES).column("item_id").to_numpy()
    return np.sort(ids.astype(np.int64))


def _blocked(folder: Path) -> int:
    """How many index vectors the folder's overlay blocks (without reading vectors)."""
    fresh = folder / VersionFiles.FRESH
    n_fresh = read_num_rows(fresh, ITEM_EMBEDDINGS) if fresh.is_file() else 0
    return len(read_tombstones(folder)) + n_fresh


def read_overlay(folder: Path, dim: int) -> Overlay:
    """The folder's index overlay: its tombstones and the fresh vectors of items updated
    since the index was built (``model.incremental.Overlay``; empty when absent)."""
    path = folder / VersionFiles.FRESH
    if not path.is_file():
        return replace(Overlay.empty(dim), tombstones=read_tombstones(folder))
    table = read_table(path, ITEM_EMBEDDINGS)
    ids = np.asarray(table.column("item_id").to_numpy(), np.int64)
    vectors = arrow_to_vectors(table.column("embedding"), copy=True)
    if vectors.shape != (len(ids), dim) or (len(ids) > 1 and not (ids[1:] > ids[:-1]).all()):
        raise ValueError(f"{path}: {vectors.shape} vectors of sorted IDs expected, dim {dim}")
    return Overlay(read_tombstones(folder), ids, vectors)


def write_overlay(folder: Path, overlay: Overlay) -> None:
    """Replace the folder's tombstones and fresh files (an empty part: no file). Never
    in place: a staging folder's files are hard links to its parent's."""
    for name in (VersionFiles.TOMBSTONES, VersionFiles.FRESH):
        (folder / name).unlink(missing_ok=True)
    if len(overlay.tombstones):
        write_table(
            folder / VersionFiles.TOMBSTONES,
            pa.table({"item_id": overlay.tombstones}),
            VERSION_TOMBSTONES,
        )
    if len(overlay.fresh_ids):
        write_table(
            folder / VersionFiles.FRESH,
            pa.table(
                {
                    "item_id": overlay.fresh_ids,
                    "embedding": vectors_to_arrow(overlay.fresh_vectors),
                }
            ),
            ITEM_EMBEDDINGS,
        )


def apply_changes(
    folder: Path, changes: CatalogueChanges, recipe: IndexRecipe | None
) -> ApplySummary:
    """Bring `folder` (items.parquet, item_embeddings.parquet, model, and index.faiss when
    present) from catalogue entry `changes.after` to `changes.upto`.

    Upserted items are embedded by the folder's model: an item the model was trained on
    keeps its ID row, any other goes through the unknown-ID row 0; a category outside the
    model's table goes through the unknown-category row. Retired items leave the tables,
    and the index (or become tombstones where the index cannot remove vectors).
    """
    seq, applied = read_catalogue_state(folder)
    if changes.after != seq:
        raise ValueError(
            f"{folder} includes catalogue entries up to {seq}; changes start at {changes.after}"
        )
    if changes.empty:
        # Nothing to upsert or retire (no entries, or only ones that change nothing): the
        # tables and the index stay as they are; only the catalogue state moves. A 1M-item
        # folder is not read and rewritten (about 1 GB of memory and seconds of I/O).
        events = (*applied, *changes.event_ids)
        write_catalogue_state(folder, changes.upto, events)
        n_items = read_num_rows(folder / VersionFiles.ITEMS, VERSION_ITEMS)
        return ApplySummary(changes.upto, events, n_items, 0, 0, _blocked(folder), False)
    table = read_table(folder / VersionFiles.ITEMS, VERSION_ITEMS)
    item_id = table.column("item_id").to_numpy()
    id_row = table.column("id_row").to_numpy()
    category = table.column("category").to_numpy()
    content = arrow_to_vectors(table.column("content"))
    emb_ids, vectors = read_embeddings(folder)
    if not np.array_equal(emb_ids, item_id):
        raise ValueError(f"{folder}: item_embeddings and items list different IDs")

    up_ids, up_vecs = changes.upsert_id, np.zeros((0, vectors.shape[1]), np.float32)
    if len(up_ids):
        model = load_served_model(folder)
        if changes.upsert_content.shape[1] != model.spec.content_dim:
            raise ValueError(
                f"catalogue items have {changes.upsert_content.shape[1]} content values, the "
                f"model in {folder} reads {model.spec.content_dim}"
            )
        pos = np.minimum(np.searchsorted(item_id, up_ids), max(len(item_id) - 1, 0))
        known = isin_sorted(up_ids, item_id)
        up_rows = np.where(known, id_row[pos] if len(item_id) else 0, 0).astype(np.int64)
        up_vecs = embed_items(
            model,
            up_rows,
            category_rows(changes.upsert_category, model.spec.n_categories),
            np.ascontiguousarray(changes.upsert_content, np.float32),
        )
    else:
        up_rows = np.empty(0, np.int64)

    up_content = changes.upsert_content if len(up_ids) else content[:0]
    keep = ~isin_sorted(item_id, np.union1d(up_ids, changes.retired_id))
    new_ids = np.concatenate([item_id[keep], up_ids])
    order = np.argsort(new_ids, kind="stable")
    new_ids = new_ids[order]
    new_vectors = np.concatenate([vectors[keep], up_vecs])[order]
    write_table(
        folder / VersionFiles.ITEMS,
        pa.table(
            {
                "item_id": new_ids,
                "id_row": np.concatenate([id_row[keep], up_rows])[order],
                "category": np.concatenate([category[keep], changes.upsert_category])[order],
                "content": vectors_to_arrow(np.concatenate([content[keep], up_content])[order]),
            }
        ),
        VERSION_ITEMS,
    )
    write_embeddings(folder, new_ids, new_vectors)

    blocked, rebuilt = 0, False
    if (folder / VersionFiles.INDEX).is_file():
        blocked, rebuilt = _edit_index(
            folder, item_id, changes, up_vecs, new_ids, new_vectors, recipe
        )
    events = (*applied, *changes.event_ids)
    write_catalogue_state(folder, changes.upto, events)
    retired = int(isin_sorted(changes.retired_id, item_id).sum())
    log.debug(
        "applied catalogue (%d, %d]: %d upserted, %d retired, %d items, %d blocked%s",
        changes.after,
        changes.upto,
        len(up_ids),
        retired,
        len(new_ids),
        blocked,
        ", index rebuilt" if rebuilt else "",
    )
    return ApplySummary(changes.upto, events, len(new_ids), len(up_ids), retired, blocked, rebuilt)


def _edit_index(
    folder: Path,
    old_ids: npt.NDArray[np.int64],
    changes: CatalogueChanges,
    up_vecs: npt.NDArray[np.float32],
    new_ids: npt.NDArray[np.int64],
    new_vectors: npt.NDArray[np.float32],
    recipe: IndexRecipe | None,
) -> tuple[int, bool]:
    """Edit the folder's index and overlay, or rebuild the index once its overlay is too
    large (``Overlay.wants_rebuild``) and a recipe is given; returns (blocked, rebuilt?)."""
    path = folder / VersionFiles.INDEX
    index = load_index(path)
    overlay = read_overlay(folder, index.d)
    held = union_sorted(old_ids, overlay.tombstones)
    edit = edit_index(index, held, overlay, changes.upsert_id, up_vecs, changes.retired_id)
    if recipe is not None and edit.overlay.wants_rebuild(len(new_ids)):
        log.info("rebuilding %s over %d items: %d vectors blocked", recipe.factory,
                 len(new_ids), edit.overlay.blocked)  # fmt: skip
        save_index(path, rebuild_index(recipe, new_ids, new_vectors))
        write_overlay(folder, Overlay.empty(index.d))
        return 0, True
    save_index(path, index)
    write_overlay(folder, edit.overlay)
    return edit.overlay.blocked, False


def rebuild_index(
    recipe: IndexRecipe, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]
) -> faiss.Index:
    """A new index of ``recipe`` over (I,) ``ids`` and their (I, D) ``vectors``, with the
    recipe's tuned search parameters."""
    index = build_index(vectors, ids, recipe.factory, seed=recipe.seed)
    if recipe.params:
        set_index_params(index, recipe.params)
    elif recipe.knob is not None and recipe.knob_value is not None:
        set_search_params(index, **{recipe.knob: recipe.knob_value})
    return index

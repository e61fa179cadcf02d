"""Publishing an items event as a delta on top of CURRENT (``core.deltas``): O(batch) bytes
written and hashed, whatever the catalogue's size.

What a delta publish reads of its chain: the base's model (to embed the upserted items)
and the ID columns of its items table plus each delta (to know which items are served and
their tower ID rows). Those files are verified against their manifests before use, once
per process: a process that publishes many events (``towerflow serve``, a worker, the
service's own publisher) keeps the verified model and the served rows of the last head,
and reads only the deltas published since.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from core.catalogue_apply import write_catalogue_state
from core.deltas import (
    DELTA_FILES,
    Chain,
    ItemDelta,
    ItemRows,
    apply_rows,
    depth_of,
    read_delta,
    resolve_chain,
    served_rows,
    verify_chain,
    write_delta,
)
from core.versionio import load_served_model
from model.embed import embed_items
from model.features import category_rows
from model.ids import isin_sorted
from model.towers import TwoTower
from storage import (
    CatalogueChanges,
    Lineage,
    Manifest,
    PublishedVersion,
    VersionFiles,
    VersionStore,
)
from storage.chains import VERSION_ONLY

__all__ = ["DeltaResult", "publish_delta", "served_now"]

log = logging.getLogger(__name__)

# The base files a delta publish reads (and so verifies).
BASE_READS: Final = (VersionFiles.MODEL_WEIGHTS, VersionFiles.MODEL_CONFIG, VersionFiles.ITEMS)


@dataclass(frozen=True)
class DeltaResult:
    """A published delta: its manifest and what it changed."""

    manifest: Manifest
    upserted: int
    inserted: int
    retired: int


@dataclass
class _Known:
    """One store's verified base model and the served rows of ``head``."""

    base: str
    model: TwoTower
    head: str
    rows: ItemRows


_known: dict[Path, _Known] = {}
_known_lock = threading.Lock()


def _chain_state(store: VersionStore, parent: PublishedVersion) -> tuple[Chain, TwoTower, ItemRows]:
    """``parent``'s chain, its base model and the rows it serves, verified: from this
    process's cache when it holds the chain's base and an ancestor of ``parent``, reading
    and verifying only the deltas above that ancestor."""
    chain = resolve_chain(store, parent)
    with _known_lock:
        known = _known.get(store.layout.root)
    ids = [d.version_id for d in chain.deltas]
    if (
        known is not None
        and known.base == chain.base.version_id
        and (known.head == chain.base.version_id or known.head in ids)
    ):
        newer = chain.deltas[ids.index(known.head) + 1 :] if known.head in ids else chain.deltas
        rows = known.rows
        for d in newer:
            store.verify(d.version_id)  # only the deltas it did not read yet
            delta = read_delta(d.path)
            ids_, (row_,) = apply_rows(
                rows.item_id, [rows.id_row], delta.item_id, [delta.id_row], delta.retired_id
            )
            rows = ItemRows(ids_, row_)
        model = known.model
    else:
        chain = verify_chain(store, chain, BASE_READS)
        model = load_served_model(chain.base.path)
        rows = served_rows(chain)
    with _known_lock:
        _known[store.layout.root] = _Known(
            chain.base.version_id, model, chain.head.version_id, rows
        )
    return chain, model, rows


def served_now(store: VersionStore) -> ItemRows:
    """The items CURRENT serves and their tower ID rows, verified: from this process's
    cache, reading only the deltas published since it last looked (O(batch) per event)."""
    _, _, rows = _chain_state(store, store.open_current(verify=False))
    return rows


def build_delta(model: TwoTower, rows: ItemRows, changes: CatalogueChanges, dim: int) -> ItemDelta:
    """The delta that brings the items ``rows`` to ``changes.upto``: upserted items are
    embedded by ``model`` into ``dim``-wide vectors (an item it was trained on keeps its
    tower ID row, any other goes through the unknown row 0); retirements keep only IDs
    that are served."""
    up_ids = changes.upsert_id
    if len(up_ids) and changes.upsert_content.shape[1] != model.spec.content_dim:
        raise ValueError(
            f"catalogue items have {changes.upsert_content.shape[1]} content values, the "
            f"model reads {model.spec.content_dim}"
        )
    _, id_row = rows.lookup(up_ids)
    vectors = (
        embed_items(
            model,
            id_row,
            category_rows(changes.upsert_category, model.spec.n_categories),
            np.ascontiguousarray(changes.upsert_content, np.float32),
        )
        if len(up_ids)
        else np.zeros((0, dim), np.float32)
    )
    retired = changes.retired_id[isin_sorted(changes.retired_id, rows.item_id)]
    content = (
        np.ascontiguousarray(changes.upsert_content, np.float32)
        if len(up_ids)
        else np.zeros((0, model.spec.content_dim), np.float32)
    )
    return ItemDelta(
        item_id=np.ascontiguousarray(up_ids, np.int64),
        id_row=id_row,
        category=np.ascontiguousarray(changes.upsert_category, np.int32),
        content=content,
        vectors=np.ascontiguousarray(vectors, np.float32),
        retired_id=np.ascontiguousarray(retired, np.int64),
    )


def publish_delta(
    store: VersionStore, parent: PublishedVersion, changes: CatalogueChanges
) -> DeltaResult:
    """Publish ``parent`` + ``changes`` as a delta, compare-and-swap on ``parent``
    (``PublishConflictError`` if CURRENT moved; the staged delta is then removed).
    The caller holds the publish lock and read ``changes`` from ``parent``'s position."""
    chain, model, rows = _chain_state(store, parent)
    delta = build_delta(model, rows, changes, parent.manifest.embedding_dim)
    inserted = int((~isin_sorted(delta.item_id, rows.item_id)).sum())
    version_id = store.new_version_id()
    staging = store.begin(version_id, kind="delta")
    try:
        write_delta(staging, delta)
        write_catalogue_state(staging, changes.upto, changes.event_ids)
        m = parent.manifest
        depth = depth_of(parent) + 1
        # What describes the parent alone (that it is a compaction, a rebased delta) is
        # not inherited: a server would take this delta for the same items as another.
        extra: dict[str, Any] = {k: v for k, v in m.extra.items() if k not in VERSION_ONLY}
        extra["coldstart"] = {"upserted": len(delta.item_id), "retired": len(delta.retired_id)}
        extra["delta"] = {
            "base": chain.base.version_id,
            "depth": depth,
            "upserted": len(delta.item_id),
            "inserted": inserted,
            "retired": len(delta.retired_id),
        }
        manifest = store.publish(
            version_id,
            expected_current=parent.version_id,
            config=m.config,
            lineage=Lineage(
                data_snapshot=m.lineage.data_snapshot,
                parent_version=parent.version_id,
                catalogue_seq=changes.upto,
                applied_events=changes.event_ids,
            ),
            embedding_dim=m.embedding_dim,
            metric=m.metric,
            item_count=m.item_count + inserted - len(delta.retired_id),
            metrics=m.metrics,
            extra=extra,
            required_files=DELTA_FILES,
            kind="delta",
        )
    except BaseException:
        if store.layout.staging_version_dir(version_id).exists():
            store.discard(version_id)
        raise
    with _known_lock:  # the next event stacks on this one: its rows are known
        new_ids, (new_rows,) = apply_rows(
            rows.item_id, [rows.id_row], delta.item_id, [delta.id_row], delta.retired_id
        )
        _known[store.layout.root] = _Known(
            chain.base.version_id, model, version_id, ItemRows(new_ids, new_rows)
        )
    return DeltaResult(manifest, len(delta.item_id), inserted, len(delta.retired_id))

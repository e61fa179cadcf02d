"""Compaction: CURRENT's chain of deltas (``core.deltas``) folded into one complete
version, so that readers load one version again instead of a base and N deltas.

A background step, never on an event's path: the new-items flow asks for it when a
chain is deeper than ``runtime.max_delta_chain``, and ``towerflow compact`` runs it by hand.
The slow part (rewriting the items table, the embeddings and the index of the whole
catalogue, hashing, fsyncing and reading them back) runs *outside* the publish lock, so
events keep publishing deltas meanwhile. Under the lock only renames and registry rows:
the fold is registered, and the deltas published while it ran are published again on
top of it (``core.rebase``; the last one swaps CURRENT), then any entry acknowledged but
in no version yet (an event in flight, or one that died after its acknowledgement) goes
on top as one more delta, so no entry is lost or applied twice. The fold is an items
version: the base's unchanged files (model, user tables, report files) are hard links
that keep their first checksums (``carried``), and it serves exactly the items of the
head it folded (``extra.compacted``). A nightly published meanwhile supersedes it: it is
then dropped.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import pyarrow as pa

from core.catalogue_apply import (
    IndexRecipe,
    read_overlay,
    rebuild_index,
    write_catalogue_state,
    write_overlay,
)
from core.catalogue_sync import LOCK_TIMEOUT_S, require_current, stage_child, sync_current
from core.delta_publish import publish_delta
from core.deltas import Chain, apply_rows, read_delta, resolve_chain, verify_chain
from core.rebase import rebase_onto
from core.versionio import read_embeddings, write_embeddings
from model.ids import union_sorted
from model.incremental import Overlay, edit_index
from storage import (
    REQUIRED_FILES,
    VERSION_ITEMS,
    Layout,
    Lineage,
    PublishedVersion,
    VersionFiles,
    VersionStore,
    arrow_to_vectors,
    load_index,
    read_table,
    save_index,
    vectors_to_arrow,
    write_table,
)
from storage.backends import open_catalogue, store_lock
from storage.catalogue import CatalogueLike
from storage.chains import COMPACTED, VERSION_ONLY, depth_of
from storage.integrity import FileIdentity, carried_entries
from storage.manifest import FileEntry
from storage.publishing import Sealed
from storage.settings import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS

__all__ = [
    "CHAIN_LONG_EVENT",
    "CompactResult",
    "CompactionRequest",
    "chain_depth",
    "compact_current",
    "compaction_request",
    "fold_deltas",
]

log = logging.getLogger(__name__)

# The files compaction rewrites; every other file of the base is carried unchanged.
_REWRITTEN: Final = (
    VersionFiles.ITEMS,
    VersionFiles.ITEM_EMBEDDINGS,
    VersionFiles.INDEX,
    VersionFiles.TOMBSTONES,
    VersionFiles.FRESH,
    VersionFiles.CATALOGUE,
)


@dataclass(frozen=True)
class CompactResult:
    """What a compaction did: ``version_id`` is CURRENT afterwards; ``folded`` the deltas
    it folded (0: nothing to do, or superseded by a nightly)."""

    version_id: str
    compacted: bool
    folded: int
    depth_before: int


def fold_deltas(folder: Path, deltas: list[PublishedVersion], recipe: IndexRecipe | None) -> None:
    """Apply ``deltas`` (verified, oldest first) to the complete version staged in
    ``folder``: its items table, embeddings, index and overlay are replaced (never written
    in place: the folder holds hard links of the base's files). An index whose overlay
    grows too large (``Overlay.wants_rebuild``) is rebuilt over the final items with
    ``recipe``, when one is given."""
    items = read_table(folder / VersionFiles.ITEMS, VERSION_ITEMS)
    ids = np.asarray(items.column("item_id").to_numpy(), np.int64)
    cols: list[Any] = [
        np.asarray(items.column("id_row").to_numpy(), np.int64),
        np.asarray(items.column("category").to_numpy(), np.int32),
        arrow_to_vectors(items.column("content"), copy=True),
    ]
    del items
    emb_ids, vectors = read_embeddings(folder)
    if not np.array_equal(emb_ids, ids):
        raise ValueError(f"{folder}: item_embeddings and items list different IDs")
    index_path = folder / VersionFiles.INDEX
    index = load_index(index_path)
    overlay = read_overlay(folder, index.d)
    for d in deltas:
        delta = read_delta(d.path)
        held = union_sorted(ids, overlay.tombstones) if len(overlay.tombstones) else ids
        overlay = edit_index(
            index, held, overlay, delta.item_id, delta.vectors, delta.retired_id
        ).overlay
        ids, [*cols, vectors] = apply_rows(
            ids,
            [*cols, vectors],
            delta.item_id,
            [delta.id_row, delta.category, delta.content, delta.vectors],
            delta.retired_id,
        )
    if recipe is not None and overlay.wants_rebuild(len(ids)):
        log.warning("compaction: rebuilding %s over %d items (%d vectors blocked)",
                    recipe.factory, len(ids), overlay.blocked)  # fmt: skip
        index, overlay = rebuild_index(recipe, ids, vectors), Overlay.empty(index.d)
    write_table(
        folder / VersionFiles.ITEMS,
        _items_table(ids, cols),
        VERSION_ITEMS,
    )
    write_embeddings(folder, ids, vectors)
    save_index(index_path, index)
    write_overlay(folder, overlay)


def _items_table(ids: np.ndarray, cols: list[Any]) -> pa.Table:
    id_row, category, content = cols
    return pa.table(
        {
            "item_id": ids,
            "id_row": id_row,
            "category": category,
            "content": vectors_to_arrow(content),
        }
    )


def _newer_deltas(
    store: VersionStore, chain: Chain, head: str
) -> tuple[PublishedVersion, list[PublishedVersion]] | None:
    """CURRENT and the deltas published on top of ``head`` up to it (verified); None when
    CURRENT is not ``head`` plus deltas (a nightly, a rollback: compaction is moot)."""
    current = require_current(store, verify=False)
    if current.version_id == head:
        return current, []
    now = resolve_chain(store, current)
    ids = [d.version_id for d in now.deltas]
    if now.base.version_id != chain.base.version_id or head not in ids:
        return None
    newer = now.deltas[ids.index(head) + 1 :]
    checked = [PublishedVersion(d.version_id, d.path, store.verify(d.version_id)) for d in newer]
    return current, checked


def _seal_fold(
    store: VersionStore,
    version_id: str,
    staging: Path,
    head: PublishedVersion,
    base: PublishedVersion,
    folded: int,
    identities: dict[str, FileIdentity],
) -> Sealed:
    """Seal the staged fold of ``head``'s chain as a complete version whose parent is
    ``head`` and which serves exactly its items (checksums, fsync, read-back: seconds at a
    million items, so before the publish lock is taken)."""
    m = head.manifest
    write_catalogue_state(staging, m.lineage.catalogue_seq or 0, ())
    extra = {k: v for k, v in m.extra.items() if k != "delta" and k not in VERSION_ONLY}
    extra[COMPACTED] = {
        "of": head.version_id,
        "base": base.version_id,
        "folded": folded,
    }
    return store.seal(
        version_id,
        hook=lambda _step: None,
        required_files=REQUIRED_FILES,
        carried=carried_entries(staging, _carried(base), identities),
        config=m.config,
        lineage=Lineage(
            data_snapshot=m.lineage.data_snapshot,
            parent_version=head.version_id,
            catalogue_seq=m.lineage.catalogue_seq,
            applied_events=(),
        ),
        embedding_dim=m.embedding_dim,
        metric=m.metric,
        item_count=m.item_count,
        metrics=m.metrics,
        extra=extra,
    )


def _carried(base: PublishedVersion) -> dict[str, FileEntry]:
    """The base's files a compaction takes over unchanged, with their recorded entries."""
    return {n: e for n, e in base.manifest.files.items() if n not in _REWRITTEN}


def compact_current(
    root: Layout | str | Path,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
    *,
    min_depth: int = 1,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> CompactResult:
    """Fold CURRENT's deltas into one complete version and publish it (see the module
    docstring). A no-op when CURRENT stacks fewer than ``min_depth`` deltas (1: when it
    is complete) and no acknowledged entry waits: a request made for a long chain that
    an earlier compaction already shortened costs nothing.
    Raises CorruptVersionError when a file of the chain fails its checksum (nothing is
    published). ``root``: the store's layout or root folder."""
    layout = root if isinstance(root, Layout) else Layout(Path(root))
    store = VersionStore(layout, keep_versions, keep_item_versions)
    # What dead publishers (a killed compaction among them) left: gone at once, as every
    # run that takes the publish lock does.
    with store_lock(layout, "publish", lock_timeout_s):
        for path in store.collect_dead(publish_locked=True):
            log.info("removed %s, left by a dead run", path)
    start = require_current(store, verify=False)
    chain = resolve_chain(store, start)
    if len(chain.deltas) < max(min_depth, 1):  # nothing (worth) folding
        # Entries acknowledged but in no version (an event that died after its
        # acknowledgement) are published as their event would have: a delta.
        synced = sync_current(layout, keep_versions, keep_item_versions)
        return CompactResult(synced.version_id, False, 0, len(chain.deltas))
    chain = verify_chain(store, chain)  # everything is read: check everything
    base, head = chain.base, chain.head
    summary = base.manifest.extra.get("index")
    recipe = IndexRecipe.from_summary(summary) if summary else None
    version_id, staging, identities = stage_child(store, base)
    try:
        fold_deltas(staging, list(chain.deltas), recipe)
        folded = len(chain.deltas)
        sealed = _seal_fold(store, version_id, staging, head, base, folded, identities)
        with store_lock(layout, "publish", lock_timeout_s):
            found = _newer_deltas(store, chain, head.version_id)
            if found is None:
                log.info("compaction of %s superseded: CURRENT moved off its chain", head)
                store.discard(version_id)
                return CompactResult(store.current() or "", False, 0, len(chain.deltas))
            current, newer = found
            # Under the lock only renames, registry rows and small files: the fold is
            # registered, the deltas published while it ran are registered again on top
            # of it (core.rebase), so events wait milliseconds, not a rewrite.
            store.commit(
                version_id, sealed, expected_current=head.version_id, kind="items",
                swap=not newer,
            )  # fmt: skip
            now = rebase_onto(store, version_id, newer, current.version_id)
            # Entries acknowledged but in no version yet: an event in flight (its own
            # publish will find them published) or one that died after acknowledging
            # (a publish after an acknowledgement includes it): one delta on top.
            now = _publish_pending(store, open_catalogue(layout), now)
    except BaseException:
        if layout.staging_version_dir(version_id).exists():
            store.discard(version_id)
        raise
    log.info(
        "compacted %s (%d deltas on %s) into %s; %d newer deltas rebased: CURRENT %s",
        head.version_id, folded, base.version_id, version_id, len(newer), now,
    )  # fmt: skip
    return CompactResult(now, True, folded, len(chain.deltas))


def _publish_pending(store: VersionStore, catalogue: CatalogueLike, current_id: str) -> str:
    """CURRENT (``current_id``) plus the catalogue entries it lacks, as a delta; the
    caller holds the publish lock. Returns CURRENT afterwards."""
    current = store.open_version(current_id, verify=False)
    changes = catalogue.changes(current.manifest.lineage.catalogue_seq or 0)
    if changes.empty:
        return current_id
    return publish_delta(store, current, changes).manifest.version_id


# The event that asks for a compaction (the `compact-items` deployment's trigger).
CHAIN_LONG_EVENT: Final = "towerflow.chain.long"


class CompactionRequest(NamedTuple):
    """What `tasks.items.request_compaction` emits (`prefect.events.emit_event`)."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any]
    id: uuid.UUID


def compaction_request(
    root: str | Path, address: str | None, max_chain: int
) -> CompactionRequest | None:
    """The `towerflow.chain.long` event when CURRENT of the store at ``root`` stacks
    ``max_chain`` deltas or more on its complete version, else None. ``address``: the
    store as the flow was given it (an absolute folder or an s3:// URL; None for the
    workers' TOWERFLOW_ROOT), so the compaction runs on the same store whichever worker
    takes it. One event per CURRENT (its id is derived from it): a retried task's second
    copy is dropped."""
    current = require_current(VersionStore(Layout(Path(root))), verify=False)
    depth = depth_of(current)
    if depth < max_chain:
        return None
    return CompactionRequest(
        event=CHAIN_LONG_EVENT,
        resource={
            "prefect.resource.id": f"towerflow.store.{current.version_id}",
            "prefect.resource.name": f"delta chain of {current.version_id}",
        },
        # min_depth: the run compacts only a chain still that deep (one that an earlier
        # run shortened meanwhile is left alone).
        payload={
            "root": address,
            "version_id": current.version_id,
            "depth": depth,
            "min_depth": max_chain,
        },
        id=uuid.uuid5(uuid.NAMESPACE_URL, f"towerflow:{current.version_id}:chain-long"),
    )


def chain_depth(store: VersionStore) -> int:
    """How many deltas CURRENT stacks on its complete version (0 when it is one)."""
    return depth_of(require_current(store, verify=False))

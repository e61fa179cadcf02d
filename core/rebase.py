"""Re-publishing a chain's newest deltas on top of its compaction, so that a compaction
never holds the publish lock for the rewrite of a whole catalogue.

A compaction folds the chain up to head H outside the publish lock (seconds at a million
items). Meanwhile events keep publishing deltas d1..dk on H. Folding those into the
complete version under the lock would rewrite, hash and fsync the whole catalogue's
files again while every event waits (about 10 s at a million items). Instead, under the
lock, the compaction C of H is registered without moving CURRENT, and d1..dk are
published again on C, as d1'..dk': the same files (hard links, their recorded
checksums, read back on publish), a manifest whose parent is the previous one and whose
chain base is C. Only the last one moves CURRENT, by compare-and-swap on dk; a crash
before it leaves CURRENT on dk, and the registered leftovers to retention.

Each rebased delta names the delta it repeats (``extra["rebased"]["of"]``): a server of
dk takes dk' over without a reload (``core.recall_advance``), as it does a compaction of
what it serves.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any

from core.deltas import DELTA_FILES
from storage import Lineage, PublishedVersion, VersionStore
from storage.chains import REBASED, VERSION_ONLY
from storage.integrity import carried_entries, file_identities

__all__ = ["rebase_onto"]

log = logging.getLogger(__name__)


def rebase_onto(
    store: VersionStore, base_id: str, deltas: Sequence[PublishedVersion], expected_current: str
) -> str:
    """Publish ``deltas`` (verified, oldest first) again on top of the registered complete
    version ``base_id``; the last one moves CURRENT from ``expected_current`` (the last of
    ``deltas``). The caller holds the publish lock. Returns the new CURRENT (``base_id``
    when there are no deltas: the caller made it CURRENT)."""
    parent = base_id
    for depth, d in enumerate(deltas, start=1):
        last = depth == len(deltas)
        version_id = store.new_version_id()
        staging = store.begin(version_id, kind="delta")
        try:
            for name in d.manifest.files:
                try:
                    os.link(d.path / name, staging / name)
                except OSError:  # another device: a copy, checked on publish all the same
                    shutil.copy2(d.path / name, staging / name)
            carried = carried_entries(
                staging, d.manifest.files, file_identities(staging, d.manifest.files)
            )
            m = d.manifest
            extra: dict[str, Any] = {k: v for k, v in m.extra.items() if k not in VERSION_ONLY}
            extra["delta"] = {**dict(m.extra["delta"]), "base": base_id, "depth": depth}
            extra[REBASED] = {"of": d.version_id}
            store.publish(
                version_id,
                expected_current=expected_current if last else parent,
                config=m.config,
                lineage=Lineage(
                    data_snapshot=m.lineage.data_snapshot,
                    parent_version=parent,
                    catalogue_seq=m.lineage.catalogue_seq,
                    applied_events=m.lineage.applied_events,
                ),
                embedding_dim=m.embedding_dim,
                metric=m.metric,
                item_count=m.item_count,
                metrics=m.metrics,
                extra=extra,
                required_files=DELTA_FILES,
                kind="delta",
                carried=carried,
                swap=last,
            )
        except BaseException:
            if store.layout.staging_version_dir(version_id).exists():
                store.discard(version_id)
            raise
        log.info("rebased %s onto %s as %s", d.version_id, base_id, version_id)
        parent = version_id
    return parent

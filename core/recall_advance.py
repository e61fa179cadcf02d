"""Moving a loaded ``Recaller`` forward by the deltas published on top of it, in place:
the new CURRENT's deltas are verified and read, the item tables and filters of the new
version are built beside the old ones, and only then is the live Faiss index edited (add,
remove, or on an index that cannot remove: a tombstone, an updated item's fresh vector
beside it) and the new ``Recaller`` swapped in. The base is never reloaded and
the index never copied, so memory grows by the added vectors, not by a second index.

The index is shared by the old and the new ``Recaller``: the edit must not overlap a
search. ``RecallService`` runs ``Advance.apply`` under its write lock, and every request
searches under the read lock, reading the serving ``Recaller`` inside it, so a request
sees the version before a delta or after it, never half of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from core.deltas import ItemDelta, apply_rows, read_delta
from core.recall import Recaller
from model.ids import union_sorted
from model.incremental import Overlay, edit_index, supports_remove
from storage import PublishedVersion, VersionStore
from storage.chains import resolve_chain, same_items_as

__all__ = ["Advance", "plan_advance"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Advance:
    """A planned move from ``before`` to ``after`` (same index object): ``apply`` edits the
    index by ``edits`` (each with the IDs the index held and its overlay before it)."""

    before: Recaller
    after: Recaller
    edits: tuple[tuple[ItemDelta, npt.NDArray[np.int64], Overlay], ...]

    def apply(self) -> Recaller:
        """Edit the shared index (the caller keeps searches off it meanwhile) and return
        ``after``; RuntimeError if the index does not end holding what ``after`` serves
        (the caller then reloads the version whole)."""
        index = self.after.index
        for delta, held, overlay in self.edits:
            edit_index(index, held, overlay, delta.item_id, delta.vectors, delta.retired_id)
        want = self.after.n_items + len(self.after.tombstones)
        if index.ntotal != want:
            raise RuntimeError(
                f"{self.after.version_id}: the index holds {index.ntotal} vectors after the "
                f"deltas, not {want}"
            )
        return self.after


def plan_advance(store: VersionStore, serving: Recaller, head: PublishedVersion) -> Advance | None:
    """How to move ``serving`` to ``head`` in place, or None when ``head`` does not stack
    on it (a nightly, a rollback, a compaction of another chain: load it whole), or when
    the served index's overlay has outgrown it and ``head`` stacks on a compaction that
    may have rebuilt it (``Overlay.wants_rebuild``).

    A version of ``head``'s chain with the same items as the served one (a compaction of
    it, a delta rebased from it: ``storage.chains.same_items_as``) is taken over, and the
    chain's deltas after it applied. A compaction of a later version of the served chain
    is reached through that chain's deltas, while retention still holds them.

    Every delta applied is verified against its manifest here (CorruptVersionError
    names the file), before anything is edited."""
    chain = resolve_chain(store, head)
    versions = [chain.base, *chain.deltas]
    ids = [v.version_id for v in versions]
    if serving.version_id in ids:
        at, start = ids.index(serving.version_id), serving
    else:
        same = [same_items_as(v) for v in versions]
        if serving.overlay.wants_rebuild(serving.n_items) and same[0] is not None:
            # A compaction rebuilds an index whose overlay is this large: load its own.
            return None
        if serving.version_id in same:
            # Exactly what is served, in another chain: the same items and vectors. It
            # is taken over, not reloaded (at a million items that saves a second index
            # in memory and seconds of loading); whoever loads it whole verifies it.
            at = same.index(serving.version_id)
            start = _adopt(serving, versions[at])
        elif same[0] is not None:
            # The base compacts a later version of the served chain: move there first.
            try:
                folded = store.open_version(same[0], verify=False)
                to_folded = plan_advance(store, serving, folded)
            except LookupError:  # pruned since: nothing to step through
                return None
            if to_folded is None or to_folded.after.version_id != same[0]:
                return None
            at, start = 0, _adopt(to_folded.after, chain.base)
            rest = _plan_from(store, start, chain.deltas, head)
            if rest is None:
                return None
            return Advance(serving, rest.after, to_folded.edits + rest.edits)
        else:
            return None
    plan = _plan_from(store, start, chain.deltas[at:], head)
    return None if plan is None else Advance(serving, plan.after, plan.edits)


def _plan_from(
    store: VersionStore,
    start: Recaller,
    newer: Sequence[PublishedVersion],
    head: PublishedVersion,
) -> Advance | None:
    deltas = []
    for d in newer:
        store.verify(d.version_id)
        deltas.append(read_delta(d.path))
    return _plan(start, deltas, head)


def _adopt(serving: Recaller, same: PublishedVersion) -> Recaller:
    """``serving`` (its tables, index and overlay: the same items) as ``same``."""
    log.info("%s: the items of %s, taken over in place", same.version_id, serving.version_id)
    return replace(serving, version_id=same.version_id, manifest=same.manifest)


def _plan(serving: Recaller, deltas: Sequence[ItemDelta], head: PublishedVersion) -> Advance | None:
    t = serving.tables
    removable = supports_remove(serving.index)
    ids = t.item_id
    cols: list[npt.NDArray[Any]] = [t.item_id_row, t.category, t.content]
    overlay = serving.overlay
    edits = []
    for delta in deltas:
        tomb = overlay.tombstones
        held = union_sorted(ids, tomb) if len(tomb) else ids
        edits.append((delta, held, overlay))
        if removable:
            overlay = Overlay.empty(int(serving.index.d))
        else:
            overlay, _ = overlay.after(held, delta.item_id, delta.vectors, delta.retired_id)
        ids, cols = apply_rows(
            ids, cols, delta.item_id, [delta.id_row, delta.category, delta.content],
            delta.retired_id,
        )  # fmt: skip
    id_row, category, content = cols
    tables = replace(t, item_id=ids, item_id_row=id_row, category=category, content=content)
    after = replace(
        serving,
        version_id=head.version_id,
        tables=tables,
        manifest=head.manifest,
        overlay=overlay,
    )
    return Advance(serving, after, tuple(edits))

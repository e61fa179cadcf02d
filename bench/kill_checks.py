"""What the kill loop (``bench.kill_loop``) checks on a store: CURRENT valid, every
acknowledged item served exactly once, nothing left behind by dead runs; and how far a
SIGKILLed child got, read from the disk it left."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.filtering import index_ids
from storage import (
    CorruptVersionError,
    Layout,
    VersionFiles,
    VersionStore,
)
from storage.fs import TMP_MARKER, is_temp_name
from storage.owners import OWNER_SUFFIX, read_owner

__all__ = [
    "Served",
    "check_store",
    "disk_phase",
    "known_versions",
    "leftovers",
    "registered",
    "served",
]


def registered(layout: Layout) -> set[str]:
    """Ids of the registered versions."""
    return {r.version_id for r in VersionStore(layout).registry.list_versions()}


def known_versions(layout: Layout) -> set[str]:
    """Registered version ids and the names of every folder in ``versions/``: taken
    before a child starts, for `disk_phase`."""
    folders = layout.versions_dir
    return registered(layout) | ({p.name for p in folders.iterdir()} if folders.is_dir() else set())


def check_store(layout: Layout) -> list[str]:
    """Problems with CURRENT and the registered versions (empty: all good). CURRENT must
    be set, verify against its manifest and check intact file by file; every registered
    version must verify."""
    store = VersionStore(layout)
    current = store.current()
    if current is None:
        return ["CURRENT is not set"]
    problems = []
    try:
        store.verify(current)
    except CorruptVersionError as e:
        problems.append(f"CURRENT {current} does not verify: {e}")
    check = store.check(current)
    if not check.intact:
        problems.append(f"CURRENT {current} not intact: {check.problems}")
    for vid in sorted(registered(layout) - {current}):
        try:
            store.verify(vid)
        except CorruptVersionError as e:
            problems.append(f"registered version {vid} does not verify: {e}")
    return problems


@dataclass(frozen=True)
class Served:
    """The acknowledged items as CURRENT serves them."""

    version_id: str
    served: int  # acknowledged items in CURRENT's items table
    lost: tuple[int, ...]  # acknowledged, but missing from the items table or the index
    duplicated: tuple[int, ...]  # any item held twice by the items table, embeddings or index
    # Items whose fresh vector (an update on an index that cannot replace vectors) is not
    # the vector the chain's embeddings give them.
    stale: tuple[int, ...] = ()
    fresh: int = 0  # items served through fresh vectors


def _repeated(ids: npt.NDArray[np.int64]) -> set[int]:
    values, counts = np.unique(ids, return_counts=True)
    return {int(v) for v in values[counts > 1]}


def served(layout: Layout, acked: Collection[int]) -> Served:
    """Read what CURRENT serves (a delta: on top of its chain): its items table,
    embeddings and index; every acknowledged item must be in each exactly once (retired
    IDs the index still holds, tombstones, do not count)."""
    from core.delta_apply import chain_vectors
    from core.deltas import resolve_chain
    from core.recall import Recaller

    store = VersionStore(layout)
    recaller = Recaller.load(store)  # the chain verified, applied, checked
    current = store.open_version(recaller.version_id, verify=False)
    items = recaller.tables.item_id
    embedded, vectors = chain_vectors(resolve_chain(store, current))
    fresh = recaller.overlay.fresh_ids
    want_fresh = vectors[np.searchsorted(embedded, fresh)] if len(fresh) else vectors[:0]
    stale = fresh[~np.isclose(recaller.overlay.fresh_vectors, want_fresh, atol=1e-6).all(axis=1)]
    held = index_ids(recaller.index)
    if held is None:
        raise TypeError(f"{current.version_id}: index kind holds no readable IDs")
    held = held[~np.isin(held, recaller.tombstones)]
    want = np.fromiter(acked, np.int64, len(acked))
    lost = want[~(np.isin(want, items) & np.isin(want, held) & np.isin(want, embedded))]
    dups = _repeated(items) | _repeated(embedded) | _repeated(held)
    return Served(
        version_id=current.version_id,
        served=int(np.isin(want, items).sum()),
        lost=tuple(sorted(int(i) for i in lost)),
        duplicated=tuple(sorted(dups)),
        stale=tuple(int(i) for i in stale),
        fresh=len(fresh),
    )


def leftovers(layout: Layout) -> list[Path]:
    """What dead runs left that a successful run should have removed: anything under
    ``staging/`` (folders, owner markers, temporary files), unregistered folders in
    ``versions/``, and temporary files of interrupted atomic writes anywhere."""
    found = [
        p
        for parent in (layout.staging_versions_dir, layout.staging_snapshots_dir)
        if parent.is_dir()
        for p in parent.iterdir()
    ]
    if layout.versions_dir.is_dir():
        known = registered(layout)
        found += [p for p in layout.versions_dir.iterdir() if p.name not in known]
    found += [
        p
        for p in layout.root.rglob("*")
        if is_temp_name(p.name) and not p.is_relative_to(layout.staging_dir)
    ]
    return sorted(found)


def disk_phase(layout: Layout, before: set[str], pid: int) -> str:
    """How far the killed process ``pid`` got, from what it left (read before any other
    run cleans up; ``before``: `known_versions` when it started): ``committed`` (it
    registered a version), ``renamed`` (a new unregistered folder in versions/),
    ``manifest written`` (its staging folder holds one), ``staging`` (its staging folder
    or owner marker exists), else ``before staging``."""
    if registered(layout) - before:
        return "committed"
    if layout.versions_dir.is_dir() and any(
        p.name not in before for p in layout.versions_dir.iterdir()
    ):
        return "renamed"
    parent = layout.staging_versions_dir
    for marker in sorted(parent.glob("*" + OWNER_SUFFIX)) if parent.is_dir() else []:
        folder = marker.with_name(marker.name.removesuffix(OWNER_SUFFIX))
        owner = read_owner(folder)
        if owner is not None and owner.pid == pid:
            manifest = (folder / VersionFiles.MANIFEST).is_file()
            return "manifest written" if manifest else "staging"
    if parent.is_dir() and any(f"{TMP_MARKER}{pid}-" in p.name for p in parent.iterdir()):
        return "staging"  # its owner marker was being written
    return "before staging"

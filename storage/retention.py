"""What gets deleted and when: pruning old published versions and collecting folders
left behind by crashed or abandoned writers.

Deletion order keeps CURRENT valid: a version is unregistered before its folder goes, and
folders that might belong to a running writer are left alone.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Final

from storage.fs import fsync_dir, is_temp_name, newest_mtime
from storage.layout import Layout
from storage.owners import OWNER_SUFFIX, owner_path, read_owner, read_owner_file
from storage.registry import RegistryLike, VersionKind, VersionRow

__all__ = [
    "DEFAULT_GC_AGE_S",
    "collect_dead",
    "collect_garbage",
    "kept_versions",
    "prune_versions",
]

log = logging.getLogger(__name__)

DEFAULT_GC_AGE_S: Final = 3600.0


def kept_versions(
    rows: Sequence[VersionRow],
    current: str | None,
    keep_nightly: int,
    keep_items: int,
    kind_of: Callable[[VersionRow], VersionKind],
) -> set[str]:
    """The ids retention keeps, from `rows` newest first:

    - CURRENT;
    - the newest `keep_nightly` nightly versions (each complete on its own files, so
      each is a rollback target that no other version's damage can reach);
    - the newest `keep_items` item versions on CURRENT's lineage: walking parents from
      CURRENT through item versions down to the nightly they started from, which is kept
      too (their unchanged files may be hard links of its files);
    - below every kept delta, each version down to the complete one it stacks on (a
      delta is read on top of that chain, so the chain goes only with it).

    Item versions off CURRENT's lineage (those of an older nightly, or of a version
    rolled back from) are not kept: item events must never push a nightly out.
    """
    by_id = {r.version_id: r for r in rows}
    nightly = [r.version_id for r in rows if kind_of(r) == "nightly"][:keep_nightly]
    keep = set(nightly)
    if current is not None:
        keep.add(current)
    walked: set[str] = set()
    node, items_kept, chain_needed = by_id.get(current or ""), 0, False
    while node is not None and node.version_id not in walked:
        walked.add(node.version_id)
        kind = kind_of(node)
        if kind == "nightly":
            keep.add(node.version_id)
            break
        if chain_needed or items_kept < keep_items or node.version_id == current:
            keep.add(node.version_id)
            items_kept += 1
            chain_needed = kind == "delta"
        node = by_id.get(node.parent or "")
    return keep


def prune_versions(
    layout: Layout,
    registry: RegistryLike,
    keep_nightly: int,
    keep_items: int,
    kind_of: Callable[[VersionRow], VersionKind],
) -> list[str]:
    """Delete the registered versions `kept_versions` does not keep, never CURRENT.
    Returns the pruned ids.

    Each row is unregistered before its folder is deleted, so a crash in between leaves
    only an unregistered folder (removed by `collect_garbage`), never a registered hole.
    `Registry.unregister` re-checks CURRENT in its transaction, so a concurrent rollback
    to a version being pruned either wins (the version stays) or fails.
    """
    rows = registry.list_versions()
    keep = kept_versions(rows, registry.current(), keep_nightly, keep_items, kind_of)
    pruned = []
    for row in rows:
        if row.version_id in keep or not registry.unregister(row.version_id):
            continue
        _remove(layout.version_dir(row.version_id))
        pruned.append(row.version_id)
        log.info("pruned version %s", row.version_id)
    if pruned:
        fsync_dir(layout.versions_dir)
    return pruned


def collect_garbage(
    layout: Layout, registry: RegistryLike, min_age_s: float = DEFAULT_GC_AGE_S
) -> list[Path]:
    """Remove unregistered folders in `versions/` and staging folders (versions and
    snapshots) whose newest entry is at least `min_age_s` seconds old, and files in the
    staging folders' parents as old that belong to no folder there (temporary files of
    cut-short marker writes, markers whose folder is gone). Returns them.

    Younger folders are left alone: a concurrent writer or publisher may own them. So
    `min_age_s` must exceed the longest time a writer goes without creating or changing a
    file in its staging folder.
    """
    candidates = [
        p
        for parent in (
            layout.versions_dir,
            layout.staging_versions_dir,
            layout.staging_snapshots_dir,
        )
        if parent.is_dir()
        for p in parent.iterdir()
        if p.is_dir()
    ]
    # Read the registry after listing: a folder registered meanwhile is then seen as such.
    registered = {r.version_id for r in registry.list_versions()}
    registered.add(registry.current() or "")
    now = time.time()
    removed = []
    for p in candidates:
        if p.parent == layout.versions_dir and p.name in registered:
            continue
        age = now - newest_mtime(p)
        if age >= min_age_s and _remove(p):
            owner_path(p).unlink(missing_ok=True)
            removed.append(p)
            log.info("gc removed %s (idle %.0f s)", p, age)
    for p in _stray_files(layout):
        try:
            age = now - p.stat().st_mtime
        except FileNotFoundError:
            continue  # removed meanwhile (its write finished, or another collector)
        if age >= min_age_s and _unlink(p):
            removed.append(p)
            log.info("gc removed %s (idle %.0f s)", p, age)
    return removed


def _stray_files(layout: Layout) -> list[Path]:
    """Files in the staging parents that no staging folder there accounts for."""
    return [
        p
        for parent in (layout.staging_versions_dir, layout.staging_snapshots_dir)
        if parent.is_dir()
        for p in sorted(parent.iterdir())
        if p.is_file()
        and (
            is_temp_name(p.name)
            or (
                p.name.endswith(OWNER_SUFFIX)
                and not p.with_name(p.name[: -len(OWNER_SUFFIX)]).exists()
            )
        )
    ]


def collect_dead(
    layout: Layout, registry: RegistryLike, *, own: Collection[Path] = (), publish_locked: bool
) -> list[Path]:
    """Remove what dead runs left, at once (no age threshold). Returns what was removed.

    - staging folders (versions and snapshots) whose owner marker names a process of
      this host that no longer exists (`storage.owners`), with their markers; `own` is
      never touched; and a marker's temporary file whose write was cut short (the first
      step of staging) once it names such a process;
    - shard parts (`storage.shards`) of versions no longer staged;
    - with `publish_locked` (the caller holds `Layout.publish_lock`, which every publisher
      holds from its rename to its commit): folders in `versions/` that are not registered, i.e.
      a publisher died between its rename and its commit.
    """
    removed: list[Path] = []
    keep = {Path(p) for p in own}
    for parent in (layout.staging_versions_dir, layout.staging_snapshots_dir):
        if not parent.is_dir():
            continue
        for p in sorted(parent.iterdir()):
            if is_temp_name(p.name):
                writer = read_owner_file(p) if p.is_file() else None
                if writer is not None and writer.is_dead() and _unlink(p):
                    removed.append(p)
                    log.info("removed %s left by dead pid %d (%s)", p, writer.pid, writer.kind)
                continue
            folder = p.with_name(p.name.removesuffix(OWNER_SUFFIX))
            if folder in keep or (p.name.endswith(OWNER_SUFFIX) and folder.exists()):
                continue  # a marker is handled with its folder
            owner = read_owner(folder)
            if owner is None or not owner.is_dead():
                continue
            if folder.is_dir() and not _remove(folder):
                continue
            owner_path(folder).unlink(missing_ok=True)
            if p == folder:
                removed.append(folder)
                log.info("removed %s left by dead pid %d (%s)", folder, owner.pid, owner.kind)
    shards = layout.staging_shards_dir  # storage.shards: parts of a staged version
    if shards.is_dir():
        for p in sorted(shards.iterdir()):
            # Its version's (or snapshot's: generation parts are kept under the snapshot's
            # staging folder name) staging folder is gone (published, discarded or removed
            # above with its dead owner): nothing will ever merge these parts.
            staged = layout.staging_versions_dir / p.name, layout.staging_snapshots_dir / p.name
            if not any(s.exists() for s in staged) and _remove(p):
                removed.append(p)
                log.info("removed shard parts %s of a version no longer staged", p)
    if publish_locked and layout.versions_dir.is_dir():
        registered = {r.version_id for r in registry.list_versions()}
        registered.add(registry.current() or "")
        for p in sorted(layout.versions_dir.iterdir()):
            if p.is_dir() and p.name not in registered and _remove(p):
                removed.append(p)
                log.info("removed unregistered %s (a publisher died before its commit)", p)
    if removed:
        for parent in (layout.versions_dir, layout.staging_versions_dir):
            if parent.is_dir():
                fsync_dir(parent)
    return removed


def _unlink(path: Path) -> bool:
    """Delete a file; False (logged) when it stayed, e.g. on a read-only store."""
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        log.warning("could not remove %s: %s", path, e)
        return False
    return True


def _remove(path: Path) -> bool:
    """Delete a folder tree; False (logged) when something stayed, e.g. on a read-only or
    permission error, so callers never report a folder removed that is still there."""
    errors: list[str] = []
    shutil.rmtree(path, onerror=lambda _f, p, exc: errors.append(f"{p}: {exc[1]}"))
    if errors:
        log.warning("could not fully remove %s: %s", path, "; ".join(errors[:3]))
    return not path.exists()

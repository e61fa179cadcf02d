"""What gets deleted and when: pruning old published versions and collecting folders
left behind by crashed or abandoned writers.

Deletion order keeps CURRENT valid: a version is unregistered before its folder goes, and
folders that might belong to a running writer are left alone.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Final

from storage.fs import fsync_dir, newest_mtime
from storage.layout import Layout
from storage.registry import Registry

__all__ = ["DEFAULT_GC_AGE_S", "collect_garbage", "prune_versions"]

log = logging.getLogger(__name__)

DEFAULT_GC_AGE_S: Final = 3600.0


def prune_versions(layout: Layout, registry: Registry, keep_versions: int) -> list[str]:
    """Delete registered versions beyond the newest `keep_versions` (by publish time),
    never CURRENT. Returns the pruned ids.

    Each row is unregistered before its folder is deleted, so a crash in between leaves
    only an unregistered folder (removed by `collect_garbage`), never a registered hole.
    `Registry.unregister` re-checks CURRENT in its transaction, so a concurrent rollback
    to a version being pruned either wins (the version stays) or fails.
    """
    rows = registry.list_versions()
    keep = {r.version_id for r in rows[:keep_versions]}
    keep.add(registry.current() or "")
    pruned = []
    for row in rows:
        if row.version_id in keep or not registry.unregister(row.version_id):
            continue
        shutil.rmtree(layout.version_dir(row.version_id), ignore_errors=True)
        pruned.append(row.version_id)
        log.info("pruned version %s", row.version_id)
    if pruned:
        fsync_dir(layout.versions_dir)
    return pruned


def collect_garbage(
    layout: Layout, registry: Registry, min_age_s: float = DEFAULT_GC_AGE_S
) -> list[Path]:
    """Remove unregistered folders in `versions/` and staging folders (versions and
    snapshots) whose newest entry is at least `min_age_s` seconds old. Returns them.

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
        if age >= min_age_s:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.info("gc removed %s (idle %.0f s)", p, age)
    return removed

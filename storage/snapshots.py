"""Immutable data snapshots: `data/<snapshot_id>/` folders of parquet tables plus
`snapshot.json`, written in a private staging folder and committed by one rename.

Snapshots with the same id are identical by construction (the writer derives the id from
everything that determines the content), so when concurrent writers race, the first
rename wins and the others discard their copy.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
from pathlib import Path

from storage.errors import SnapshotNotFoundError
from storage.fs import fsync_dir, fsync_file, is_temp_name
from storage.layout import Layout, SnapshotFiles, validate_id
from storage.owners import owner_path, write_owner
from storage.remote_binding import read_remote

__all__ = [
    "begin_snapshot",
    "commit_snapshot",
    "list_snapshots",
    "snapshot_exists",
    "snapshot_path",
]

log = logging.getLogger(__name__)


def snapshot_exists(layout: Layout, snapshot_id: str) -> bool:
    """Whether snapshot `snapshot_id` is committed (on an object-store root: here, or on
    the remote, in which case it is fetched into this cache, verified)."""
    return layout.snapshot_dir(snapshot_id).is_dir() or _fetch(layout, snapshot_id)


def list_snapshots(layout: Layout) -> list[str]:
    """Ids of all committed snapshots, sorted."""
    if not layout.data_dir.is_dir():
        return []
    return sorted(p.name for p in layout.data_dir.iterdir() if p.is_dir())


def snapshot_path(layout: Layout, snapshot_id: str) -> Path:
    """Folder of committed snapshot `snapshot_id`; `SnapshotNotFoundError` lists the
    available ones when it is missing."""
    path = layout.snapshot_dir(snapshot_id)
    if not path.is_dir() and not _fetch(layout, snapshot_id):
        raise SnapshotNotFoundError(
            f"snapshot {snapshot_id!r} not found at {path} "
            f"(available in {layout.data_dir}: {list_snapshots(layout)})"
        )
    return path


def begin_snapshot(layout: Layout, snapshot_id: str) -> Path:
    """Create a private staging folder for writing snapshot `snapshot_id`.

    Write the tables and `snapshot.json` there (each atomically), then `commit_snapshot`.
    """
    staging = layout.staging_snapshot_dir(snapshot_id, secrets.token_hex(4))
    staging.parent.mkdir(parents=True, exist_ok=True)
    write_owner(staging, "snapshot")  # first: once this process dies the folder is garbage
    staging.mkdir()
    log.debug("staging snapshot %s at %s", snapshot_id, staging)
    return staging


def commit_snapshot(layout: Layout, snapshot_id: str, staging_path: Path) -> Path:
    """Make the staged snapshot durable and rename it to `data/<snapshot_id>/`.

    If that snapshot already exists (a concurrent writer committed first), the staged
    copy is discarded. Returns the committed folder. Requires `snapshot.json` in the
    staging folder, the marker that the writer finished.
    """
    validate_id("snapshot id", snapshot_id)
    staging_path = Path(staging_path)
    target = layout.snapshot_dir(snapshot_id)
    if staging_path.parent != layout.staging_snapshots_dir or not staging_path.is_dir():
        raise ValueError(
            f"{staging_path} is not a snapshot staging folder from begin_snapshot() "
            f"(expected one under {layout.staging_snapshots_dir})"
        )
    names = sorted(p.name for p in staging_path.iterdir())
    unfinished = [n for n in names if is_temp_name(n)]
    if unfinished:
        raise RuntimeError(f"{staging_path}: unfinished writes {unfinished}")
    if SnapshotFiles.MANIFEST not in names:
        raise FileNotFoundError(
            f"cannot commit snapshot {snapshot_id!r}: {staging_path} lacks "
            f"{SnapshotFiles.MANIFEST} (has {names})"
        )
    if target.exists():
        return _discard(staging_path, target)

    for n in names:
        fsync_file(staging_path / n)
    fsync_dir(staging_path)
    if not layout.data_dir.is_dir():
        layout.data_dir.mkdir(parents=True, exist_ok=True)
        fsync_dir(layout.data_dir.parent)
    try:
        os.rename(staging_path, target)
    except OSError as e:
        # rename(2) onto a non-empty folder fails: another writer won between our check
        # and our rename.
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.is_dir():
            return _share(layout, snapshot_id, _discard(staging_path, target))
        raise
    fsync_dir(layout.data_dir)
    owner_path(staging_path).unlink(missing_ok=True)
    fsync_dir(layout.staging_snapshots_dir)
    log.debug("committed snapshot %s at %s", snapshot_id, target)
    return _share(layout, snapshot_id, target)


def _share(layout: Layout, snapshot_id: str, target: Path) -> Path:
    """On an object-store root, put the committed snapshot on the remote unless it is
    there (same id, same content: the first writer's copy stands). Returns ``target``."""
    remote = read_remote(layout)
    if remote is not None and not remote.has_snapshot(snapshot_id):
        remote.upload_snapshot(snapshot_id, target)
    return target


def _fetch(layout: Layout, snapshot_id: str) -> bool:
    """On an object-store root, download snapshot ``snapshot_id`` from the remote into
    ``data/``, every file verified first; False when the remote does not hold it (or the
    root is local). Concurrent fetches: the first rename wins."""
    validate_id("snapshot id", snapshot_id)
    remote = read_remote(layout)
    if remote is None or not remote.has_snapshot(snapshot_id):
        return False
    tmp = layout.staging_snapshots_dir / f"{snapshot_id}.fetch-{secrets.token_hex(4)}"
    try:
        remote.fetch_snapshot(snapshot_id, tmp)
        layout.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, layout.snapshot_dir(snapshot_id))
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not snapshot_exists(
                layout, snapshot_id
            ):
                raise
        fsync_dir(layout.data_dir)
        log.info("fetched snapshot %s from %s", snapshot_id, remote.shown)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return True


def _discard(staging_path: Path, target: Path) -> Path:
    log.info("snapshot %s already committed; discarding %s", target.name, staging_path)
    shutil.rmtree(staging_path)
    owner_path(staging_path).unlink(missing_ok=True)
    return target

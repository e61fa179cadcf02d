"""Finished steps of a nightly run, kept so that a rerun after a failure can reuse them.

A step (training, embedding, evaluation) writes files into the run's staging folder. When
it finishes, ``save_step`` copies those files under ``<root>/cache/steps/<step>/<key>/``
with an ``entry.json`` of their sizes and SHA-256, where ``key`` names the step's real
inputs (the core computes it: snapshot, configuration, code). A later run with the same
key calls ``restore_step``: every file is checked against ``entry.json`` before a byte is
copied into the new staging folder, and a damaged entry is dropped, never used.

Copies, not hard links: the staging folder becomes a published version, and nightly
versions never share an inode with anything (a bit flip in one copy must not reach the
other). A successful publish clears the cache (``clear_steps``): only a failed run's
steps are worth keeping.

Writes are atomic: an entry is assembled in a temporary folder beside the others and
renamed into place, so a killed process leaves no half-entry (at worst a temporary folder,
removed by the next ``clear_steps``). Saving is best effort: the caller decides whether a
failure to save matters (for a cache it does not).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from storage.fs import fsync_dir, fsync_file, sha256_file
from storage.layout import Layout, validate_id

__all__ = [
    "StepEntry",
    "cache_dir",
    "clear_steps",
    "restore_step",
    "save_step",
    "stage_listing",
    "step_outputs",
]

log = logging.getLogger(__name__)

ENTRY_FILE: Final = "entry.json"
_TMP_PREFIX: Final = ".tmp-"
_FORMAT: Final = 1

# (inode, size, mtime in ns) of each file of a folder: what changed during a step.
Listing = dict[str, tuple[int, int, int]]


@dataclass(frozen=True)
class StepEntry:
    """A kept step: its files (name -> (size in bytes, SHA-256)) and the step's metadata
    (its return value as JSON, written by the core)."""

    step: str
    key: str
    files: dict[str, tuple[int, str]]
    meta: dict[str, Any]
    created_at: str


def cache_dir(layout: Layout) -> Path:
    """Folder of kept steps under the store root."""
    return layout.root / "cache" / "steps"


def _entry_dir(layout: Layout, step: str, key: str) -> Path:
    return cache_dir(layout) / validate_id("step", step) / validate_id("step key", key)


def stage_listing(folder: Path) -> Listing:
    """Identity of every regular file directly in ``folder`` (hidden files excluded)."""
    out: Listing = {}
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        st = entry.stat(follow_symlinks=False)
        out[entry.name] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def step_outputs(before: Listing, after: Listing) -> list[str]:
    """Files created or replaced between two listings of one folder, sorted."""
    return sorted(name for name, ident in after.items() if before.get(name) != ident)


def save_step(
    layout: Layout, step: str, key: str, source: Path, names: list[str], meta: dict[str, Any]
) -> Path:
    """Copy ``names`` from folder ``source`` into the entry ``(step, key)`` with their
    checksums and ``meta``; replaces an entry of the same key. Returns the entry folder.

    Raises OSError (a full disk, ...) with nothing half-written left visible."""
    target = _entry_dir(layout, step, key)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f"{_TMP_PREFIX}{key}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        files: dict[str, list[Any]] = {}
        for name in names:
            dest = tmp / validate_id("file name", name)
            shutil.copyfile(source / name, dest)
            fsync_file(dest)
            files[name] = [dest.stat().st_size, sha256_file(dest)]
        record = {
            "format": _FORMAT,
            "step": step,
            "key": key,
            "files": files,
            "meta": meta,
            "created_at": datetime.now(UTC).isoformat(),
        }
        (tmp / ENTRY_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
        fsync_file(tmp / ENTRY_FILE)
        fsync_dir(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.debug("kept step %s (%s): %s", step, key, ", ".join(names))
    return target


def _read_entry(folder: Path, step: str, key: str) -> StepEntry:
    record = json.loads((folder / ENTRY_FILE).read_text(encoding="utf-8"))
    if record.get("format") != _FORMAT or record.get("step") != step or record.get("key") != key:
        raise ValueError(f"{folder / ENTRY_FILE}: not the entry of step {step!r} key {key!r}")
    files = {str(n): (int(v[0]), str(v[1])) for n, v in dict(record["files"]).items()}
    return StepEntry(step, key, files, dict(record["meta"]), str(record["created_at"]))


def _damage(folder: Path, entry: StepEntry) -> str | None:
    """Why the entry's files cannot be trusted, or None when every one checks out."""
    for name, (size, digest) in entry.files.items():
        path = folder / name
        try:
            if path.stat().st_size != size:
                return f"{name}: size {path.stat().st_size} != {size}"
            if sha256_file(path) != digest:
                return f"{name}: checksum mismatch"
        except OSError as e:
            return f"{name}: {e.strerror or e}"
    return None


def restore_step(layout: Layout, step: str, key: str, dest: Path) -> StepEntry | None:
    """Copy the kept files of ``(step, key)`` into folder ``dest`` after checking each
    against its recorded size and SHA-256; returns the entry, or None when there is none.

    A damaged or unreadable entry is logged, removed and reported as None (the step then
    runs again); nothing is copied from it. A file is copied under a temporary name and
    renamed, so ``dest`` never holds a partial file."""
    folder = _entry_dir(layout, step, key)
    if not (folder / ENTRY_FILE).is_file():
        return None
    try:
        entry = _read_entry(folder, step, key)
        reason = _damage(folder, entry)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        entry, reason = None, f"{ENTRY_FILE}: {e}"
    if entry is None or reason is not None:
        log.warning(
            "kept step %s (%s) is damaged (%s): dropped, the step runs again", step, key, reason
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None
    for name in entry.files:
        tmp = dest / f".{name}.restore-{secrets.token_hex(4)}"
        try:
            shutil.copyfile(folder / name, tmp)
            fsync_file(tmp)
            os.replace(tmp, dest / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    fsync_dir(dest)
    return entry


def clear_steps(layout: Layout) -> int:
    """Remove every kept step (and temporary folders of killed saves); returns how many
    entries were removed."""
    root = cache_dir(layout)
    if not root.is_dir():
        return 0
    removed = sum(
        1
        for step in root.iterdir()
        if step.is_dir()
        for entry in step.iterdir()
        if not entry.name.startswith(_TMP_PREFIX)
    )
    shutil.rmtree(root, ignore_errors=True)
    return removed

"""Low-level durable file operations: fsync, atomic replace, checksums.

Every file `storage` writes goes through `atomic_path`, so a file is on disk whole or not
at all, whatever instant the process dies.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

__all__ = [
    "TMP_MARKER",
    "atomic_path",
    "atomic_write_bytes",
    "file_lock",
    "fsync_dir",
    "fsync_file",
    "is_temp_name",
    "newest_mtime",
    "sha256_file",
]

log = logging.getLogger(__name__)

# Temporary files are hidden (leading ".") and carry this marker, so publish can tell an
# unfinished write from a real artifact.
TMP_MARKER: Final = ".tmp-"


def fsync_file(path: Path) -> None:
    """Flush a file's data and metadata to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries, making creates/renames/unlinks in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in `chunk`-byte pieces (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def is_temp_name(name: str) -> bool:
    """Whether `name` is a temporary file left by `atomic_path`."""
    return name.startswith(".") and TMP_MARKER in name


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on clean exit make it `path` durably.

    The caller writes the whole file to the yielded path. On success it is fsynced,
    `os.replace`d onto `path` (atomic on POSIX within one filesystem, hence the same
    folder) and the folder is fsynced so the rename survives a power cut. On error the
    temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {path}")
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    log.debug("wrote %s", path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably (see `atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def newest_mtime(path: Path) -> float:
    """Latest mtime (unix s) of a folder and everything in it.

    The folder's own mtime is not enough: a writer appending to one file for an hour
    leaves it old.
    """
    newest = path.stat().st_mtime
    for p in path.rglob("*"):
        try:
            newest = max(newest, p.stat().st_mtime)
        except FileNotFoundError:
            continue  # deleted while we looked
    return newest


@contextmanager
def file_lock(
    path: Path, timeout_s: float = 300.0, poll_s: float = 0.01, owner: str | None = None
) -> Iterator[None]:
    """Hold an exclusive advisory lock (`flock`) on `path` for the `with` block.

    The kernel drops the lock when its holder dies, so a crashed process never leaves the
    lock taken. With `owner` (e.g. "flow run X, pid N"), the holder writes it into the
    file, and a waiter that gives up names it. Raises `TimeoutError` naming the file (and
    the holder) after `timeout_s`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = _read_owner(path) if owner is not None else ""
                    raise TimeoutError(
                        f"{path}: lock still held after {timeout_s} s"
                        + (f" by {holder}" if holder else "")
                    ) from None
                time.sleep(poll_s)
        if owner is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.encode(), 0)
        try:
            yield
        finally:
            if owner is not None:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_owner(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()[:200]
    except OSError:
        return ""

"""Every file of a version against its manifest, reported file by file (for `towerflow
verify` and for telling which kept versions a rollback can still reach), and the
checksums a derived version carries over from its parent instead of re-hashing."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from storage.errors import CorruptVersionError
from storage.fs import sha256_file
from storage.manifest import FileEntry, Manifest, read_manifest, verify_files

__all__ = [
    "FileIdentity",
    "FileState",
    "FileStatus",
    "VersionCheck",
    "carried_entries",
    "check_version",
    "file_identities",
    "verify_version",
]

FileStatus = Literal["ok", "missing", "wrong size", "wrong checksum", "unreadable"]

MANIFEST_ROW: Final = "manifest.json"


@dataclass(frozen=True)
class FileState:
    """One file of a version: its state, sizes, and how many names share its inode."""

    name: str
    status: FileStatus
    expected_bytes: int | None
    actual_bytes: int | None
    links: int | None  # st_nlink: > 1 means another version holds the same bytes
    detail: str = ""


@dataclass(frozen=True)
class VersionCheck:
    """The result of checking one version: intact when every file is `ok`."""

    version_id: str
    files: tuple[FileState, ...]

    @property
    def intact(self) -> bool:
        return all(f.status == "ok" for f in self.files)

    @property
    def problems(self) -> tuple[FileState, ...]:
        return tuple(f for f in self.files if f.status != "ok")


def check_version(version_id: str, path: Path, manifest_sha256: str | None = None) -> VersionCheck:
    """Check every file of `path` (the folder of `version_id`) against its manifest, and
    the manifest against `manifest_sha256` (recorded by the registry; None: not known).

    Unlike `storage.manifest.verify_files` it does not stop at the first bad file: the
    report names each file's state. An unreadable manifest is one `manifest.json` row; a
    damaged but readable one is reported, and the files are still checked against it.
    """
    if not path.is_dir():
        row = FileState(MANIFEST_ROW, "missing", None, None, None, f"folder {path} is missing")
        return VersionCheck(version_id, (row,))
    head: tuple[FileState, ...] = ()
    if manifest_sha256 is not None:
        head = (_check_manifest(path / MANIFEST_ROW, manifest_sha256),)
    try:
        manifest = read_manifest(version_id, path)
    except CorruptVersionError as e:
        if head and head[0].status != "ok":
            return VersionCheck(version_id, head)  # already says missing / damaged
        return VersionCheck(
            version_id, (FileState(MANIFEST_ROW, "unreadable", None, None, None, e.reason),)
        )
    files = tuple(_check_file(path, n, e) for n, e in sorted(manifest.files.items()))
    return VersionCheck(version_id, head + files)


def verify_version(
    version_id: str,
    path: Path,
    manifest_sha256: str | None,
    files: Collection[str] | None = None,
) -> Manifest:
    """Check folder `path` of `version_id` against its manifest (or only `files` of it),
    and the manifest against `manifest_sha256` (None: not recorded); return the manifest.

    Raises `CorruptVersionError` naming the missing folder, a damaged or unreadable
    manifest, or the first file that is missing or has the wrong size or checksum.
    """
    if not path.is_dir():
        raise CorruptVersionError(version_id, None, f"folder {path} is missing")
    if manifest_sha256 is not None:
        try:
            digest = sha256_file(path / MANIFEST_ROW)
        except FileNotFoundError:
            raise CorruptVersionError(version_id, MANIFEST_ROW, "missing") from None
        if digest != manifest_sha256:
            raise CorruptVersionError(
                version_id,
                MANIFEST_ROW,
                f"has sha256 {digest}, the registry recorded {manifest_sha256} at publish",
            )
    manifest = read_manifest(version_id, path)
    verify_files(version_id, path, manifest, files)
    return manifest


def _check_manifest(p: Path, expected: str) -> FileState:
    try:
        size = p.stat().st_size
        digest = sha256_file(p)
    except FileNotFoundError:
        return FileState(MANIFEST_ROW, "missing", None, None, None)
    except OSError as e:
        return FileState(MANIFEST_ROW, "unreadable", None, None, None, str(e))
    if digest != expected:
        detail = f"sha256 {digest}, the registry recorded {expected}"
        return FileState(MANIFEST_ROW, "wrong checksum", None, size, 1, detail)
    return FileState(MANIFEST_ROW, "ok", None, size, 1)


def _check_file(folder: Path, name: str, entry: FileEntry) -> FileState:
    p = folder / name
    try:
        st = p.stat()
    except FileNotFoundError:
        return FileState(name, "missing", entry.bytes, None, None)
    except OSError as e:
        return FileState(name, "unreadable", entry.bytes, None, None, str(e))
    if st.st_size != entry.bytes:
        return FileState(name, "wrong size", entry.bytes, st.st_size, st.st_nlink)
    try:
        digest = sha256_file(p)
    except OSError as e:
        return FileState(name, "unreadable", entry.bytes, st.st_size, st.st_nlink, str(e))
    if digest != entry.sha256:
        detail = f"sha256 {digest}, manifest says {entry.sha256}"
        return FileState(name, "wrong checksum", entry.bytes, st.st_size, st.st_nlink, detail)
    return FileState(name, "ok", entry.bytes, st.st_size, st.st_nlink)


# (st_dev, st_ino, st_size, st_mtime_ns): a file replaced by an atomic write gets a new
# inode, so an unchanged identity means these are the bytes that were linked or copied in.
FileIdentity = tuple[int, int, int, int]


def file_identities(folder: Path, names: Iterable[str]) -> dict[str, FileIdentity]:
    """The identity of each named file of `folder` that exists."""
    out: dict[str, FileIdentity] = {}
    for n in names:
        try:
            st = os.stat(folder / n)
        except FileNotFoundError:
            continue
        out[n] = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def carried_entries(
    folder: Path, recorded: Mapping[str, FileEntry], identities: Mapping[str, FileIdentity]
) -> dict[str, FileEntry]:
    """The files of `folder` still as they were when `identities` was taken, each with the
    checksum `recorded` for it when its bytes were first written.

    A file rewritten since (new inode or size or mtime) is left out: it gets hashed as
    new bytes. Carried entries are not re-hashed into a manifest; the publish still reads
    them back and checks them against these recorded checksums.
    """
    now = file_identities(folder, identities)
    return {
        n: recorded[n] for n, ident in identities.items() if n in recorded and now.get(n) == ident
    }

"""The staging side of publishing a version: the publish steps, the files a version
must hold, checking a staging folder and building its manifest entries."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from storage._sqlite import READ_ONLY_ERRNOS
from storage.errors import StoreReadOnlyError
from storage.fs import is_temp_name
from storage.layout import VersionFiles
from storage.manifest import FileEntry, checksum_files

__all__ = ["PUBLISH_STEPS", "REQUIRED_FILES", "file_entries", "staged_files", "writing"]

# Step boundaries of `VersionStore.publish`, in order; `hook(step)` runs right after each.
PUBLISH_STEPS: Final[tuple[str, ...]] = (
    "staged",  # staging folder checked: required files present, no unfinished temp files
    "manifest_written",  # checksums computed, manifest.json atomically written into staging
    "fsynced",  # every staged file and the staging folder fsynced
    "verified",  # every file re-read and matched against the manifest
    "renamed",  # staging folder renamed to versions/<id>, versions/ fsynced (not yet CURRENT)
    "committed",  # version row inserted and CURRENT swapped in one SQLite transaction
    "pruned",  # versions beyond keep_versions unregistered, then deleted
)

REQUIRED_FILES: Final[frozenset[str]] = frozenset(
    {
        VersionFiles.MODEL_WEIGHTS,
        VersionFiles.MODEL_CONFIG,
        VersionFiles.INDEX,
        VersionFiles.ITEM_EMBEDDINGS,
    }
)


@contextmanager
def writing(root: Path) -> Iterator[None]:
    """Turn a write refused because the store is read-only into `StoreReadOnlyError`."""
    try:
        yield
    except StoreReadOnlyError:
        raise
    except OSError as e:
        if e.errno in READ_ONLY_ERRNOS:
            raise StoreReadOnlyError(root, str(e)) from e
        raise


def file_entries(
    staging: Path, names: list[str], carried: Mapping[str, FileEntry]
) -> dict[str, FileEntry]:
    """Manifest entries: the recorded one for each carried file, fresh checksums for the
    rest."""
    unknown = sorted(set(carried) - set(names))
    if unknown:
        raise ValueError(f"carried files {unknown} are not staged in {staging}")
    fresh = checksum_files(staging, [n for n in names if n not in carried])
    return {n: carried[n] if n in carried else fresh[n] for n in names}


def staged_files(version_id: str, staging: Path, required: Collection[str]) -> list[str]:
    """Names of the files to publish; raises if the staging folder is not publishable."""
    names: list[str] = []
    for p in sorted(staging.iterdir()):
        if is_temp_name(p.name):
            raise RuntimeError(
                f"{staging}: unfinished write {p.name!r} (a writer is still running or crashed)"
            )
        if not p.is_file() or p.is_symlink():
            raise ValueError(f"{staging}: {p.name!r} is not a regular file; versions are flat")
        # A manifest left by an interrupted publish attempt is rewritten, not listed.
        if p.name != VersionFiles.MANIFEST:
            names.append(p.name)
    missing = sorted(set(required) - set(names))
    if missing:
        raise FileNotFoundError(
            f"cannot publish {version_id!r}: {staging} lacks {missing} (has {names})"
        )
    return names

"""The staging side of publishing a version: the publish steps, the files a version
must hold, checking a staging folder, and sealing it (manifest, fsync, read-back) before
`VersionStore.publish` renames and commits it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, NamedTuple

from storage._sqlite import READ_ONLY_ERRNOS
from storage.errors import StoreReadOnlyError
from storage.fs import fsync_dir, fsync_file, is_temp_name, sha256_file
from storage.layout import VersionFiles
from storage.manifest import (
    FileEntry,
    Lineage,
    Manifest,
    checksum_files,
    utc_now_iso,
    verify_files,
)

__all__ = [
    "PUBLISH_STEPS",
    "REQUIRED_FILES",
    "Sealed",
    "file_entries",
    "seal_staging",
    "staged_files",
    "writing",
]

# Step boundaries of `VersionStore.publish`, in order; `hook(step)` runs right after each.
PUBLISH_STEPS: Final[tuple[str, ...]] = (
    "staged",  # staging folder checked: required files present, no unfinished temp files
    "manifest_written",  # checksums computed, manifest.json atomically written into staging
    "fsynced",  # every staged file and the staging folder fsynced
    "verified",  # every file re-read and matched against the manifest
    "renamed",  # staging folder renamed to versions/<id>, versions/ fsynced (not yet CURRENT)
    "uploaded",  # a remote store's copy put, manifest last, and read back (else a no-op)
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


class Sealed(NamedTuple):
    """A staged version ready to commit: its manifest (written in the staging folder)
    and the manifest's own SHA-256 (for the registry row)."""

    manifest: Manifest
    manifest_sha256: str


def seal_staging(
    version_id: str,
    staging: Path,
    *,
    required_files: Collection[str],
    carried: Mapping[str, FileEntry],
    step: Callable[[str], None],
    config: Mapping[str, Any],
    lineage: Lineage,
    embedding_dim: int,
    metric: str,
    item_count: int,
    metrics: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> tuple[Manifest, str]:
    """The publish steps up to "verified": check the staged files, write the manifest
    (``carried`` files keep their recorded entries), fsync everything, read every file back
    against the manifest. Returns the manifest and its own SHA-256 (for the registry row).
    """
    names = staged_files(version_id, staging, required_files)
    step("staged")

    manifest = Manifest(
        version_id=version_id,
        created_at=utc_now_iso(),
        config=dict(config),
        lineage=lineage,
        embedding_dim=embedding_dim,
        metric=metric,
        item_count=item_count,
        metrics=dict(metrics),
        extra=dict(extra),
        files=file_entries(staging, names, carried),
    )
    manifest.write(staging / VersionFiles.MANIFEST)
    manifest_sha256 = sha256_file(staging / VersionFiles.MANIFEST)
    step("manifest_written")

    # Files may come from other processes that did not fsync; make them durable before
    # anything can point at them.
    for n in names:
        fsync_file(staging / n)
    fsync_dir(staging)
    step("fsynced")

    verify_files(version_id, staging, manifest)
    step("verified")
    return manifest, manifest_sha256

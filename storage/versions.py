"""Model versions: staging, the crash-safe publish protocol and rolling back
`versions/<id>/` folders (opening and verifying them: `storage.version_reading`; pruning
and gc: `storage.retention`).

Invariant: CURRENT (in the registry) always names a registered version whose folder is
complete and matches its manifest's checksums, whatever instant a process dies. Publish
gets there by making the folder complete and durable (on an object-store root: uploaded
and read back) *before* one registry transaction moves CURRENT; pruning unregisters
*before* it deletes.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from storage.database import DatabaseError
from storage.errors import (
    CorruptVersionError,
    PublishConflictError,
    VersionNotFoundError,
)
from storage.fs import fsync_dir
from storage.layout import Layout, validate_id
from storage.manifest import (
    FileEntry,
    Lineage,
    Manifest,
)
from storage.objectstore import RemoteError
from storage.owners import owner_path, write_owner
from storage.publishing import PUBLISH_STEPS, REQUIRED_FILES, Sealed, seal_staging, writing
from storage.registry import VersionKind
from storage.retention import DEFAULT_GC_AGE_S, collect_dead, collect_garbage, prune_versions
from storage.settings import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS
from storage.shards import ShardFolder
from storage.version_reading import VersionReader
from storage.version_views import PublishedVersion, VersionInfo

__all__ = [
    "PUBLISH_STEPS",
    "REQUIRED_FILES",
    "PublishedVersion",
    "Sealed",
    "VersionInfo",
    "VersionStore",
]

log = logging.getLogger(__name__)


# What a failed registry call raises besides the registry's own errors (conflict, not found).
_REGISTRY_ERRORS: Final = (OSError, sqlite3.Error, DatabaseError)


class _ReadCurrent:
    """Sentinel: `rollback` should read CURRENT itself (None is a meaningful value)."""


_READ_CURRENT: Final = _ReadCurrent()


class VersionStore(VersionReader):
    """Published model versions under one `Layout`: reading them (`VersionReader`),
    staging, publishing, rolling back and cleaning up. Constructing it touches no disk.

    Reading (`current`, `open_current`, `open_version`, `verify`, `list_versions`,
    `staging_path`) never writes, so it works on a read-only store. There, `begin`,
    `rollback` and `prune` raise `StoreReadOnlyError` (and `publish` cannot start: it
    needs the staging folder that `begin` makes).
    """

    def __init__(
        self,
        layout: Layout,
        keep_versions: int = DEFAULT_KEEP_VERSIONS,
        keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
    ) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        if keep_item_versions < 0:
            raise ValueError(f"keep_item_versions must be >= 0, got {keep_item_versions}")
        super().__init__(layout)
        self.keep_versions = keep_versions  # nightly versions
        self.keep_item_versions = keep_item_versions  # item versions on CURRENT's lineage

    # -- staging -------------------------------------------------------------------------

    @staticmethod
    def new_version_id() -> str:
        """Unique id that sorts by creation time: `v<UTC yyyymmddTHHMMSSmmm>Z-<6 hex>`."""
        now = datetime.now(UTC)
        stamp = f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z"
        return f"v{stamp}-{secrets.token_hex(3)}"

    def begin(self, version_id: str | None = None, kind: VersionKind = "nightly") -> Path:
        """Create and return the staging folder of a new version (a fresh id if None).

        Writers (possibly other processes) put the version's files there, each written
        atomically, then one caller runs `publish`. The calling process is recorded as
        the folder's owner (`storage.owners`): once it is dead, `collect_dead` removes it.
        """
        vid = validate_id("version id", self.new_version_id() if version_id is None else version_id)
        if self.layout.version_dir(vid).exists() or self.registry.get(vid) is not None:
            raise FileExistsError(f"version {vid!r} already exists in {self.layout.versions_dir}")
        staging = self.layout.staging_version_dir(vid)
        with writing(self.layout.root):
            staging.parent.mkdir(parents=True, exist_ok=True)
            if staging.exists():
                raise FileExistsError(f"version {vid!r} is already being staged at {staging}")
            write_owner(staging, kind)  # first: a crash right after leaves only a marker
            try:
                staging.mkdir()
            except FileExistsError:
                raise FileExistsError(
                    f"version {vid!r} is already being staged at {staging}"
                ) from None
        log.debug("staging version %s at %s", vid, staging)
        return staging

    def staging_path(self, version_id: str) -> Path:
        """The staging folder created by `begin(version_id)`."""
        staging = self.layout.staging_version_dir(version_id)
        if not staging.is_dir():
            parent = self.layout.staging_versions_dir
            staged = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
            raise FileNotFoundError(
                f"no staging folder for version {version_id!r} at {staging} "
                f"(call begin() first; staged: {staged})"
            )
        return staging

    # -- publish -------------------------------------------------------------------------

    def publish(
        self,
        version_id: str,
        *,
        expected_current: str | None,
        config: Mapping[str, Any],
        lineage: Lineage,
        embedding_dim: int,
        metric: str,
        item_count: int,
        metrics: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        required_files: Collection[str] = REQUIRED_FILES,
        hook: Callable[[str], None] | None = None,
        keep_staging_on_conflict: bool = False,
        kind: VersionKind = "nightly",
        carried: Mapping[str, FileEntry] | None = None,
        swap: bool = True,
    ) -> Manifest:
        """Publish the staged version and make it CURRENT if CURRENT is `expected_current`.

        Without `swap` the version is registered and CURRENT is left alone (nothing is
        pruned): a version that a publish made right after, by the same holder of the
        publish lock, stacks on (compaction's rebased deltas); `expected_current` is then
        its parent, recorded in its row.

        Callers that share a store hold `Layout.publish_lock` around this call
        (`core.catalogue_sync` does): `collect_dead` relies on it to tell a dead
        publisher's renamed, unregistered folder from one about to be committed.

        Runs the steps of `PUBLISH_STEPS`, calling `hook(step)` after each (tests use it to
        kill the process there). Raises `PublishConflictError` if CURRENT moved meanwhile;
        the version folder is then removed, or, with `keep_staging_on_conflict`, moved back
        to staging so the caller can bring it up to date and publish it again (a crash
        before that move leaves an unregistered folder that `gc` removes).
        Returns the written manifest.

        `carried`: staged files taken over unchanged from another version (or from an
        earlier attempt), with the checksum recorded when their bytes were first written.
        They are not re-hashed into the manifest: the verify step reads them back and
        fails with `CorruptVersionError` if their bytes no longer match, so bad bytes
        never get fresh checksums.
        """
        step = hook or (lambda _step: None)
        sealed = self.seal(
            version_id,
            required_files=required_files,
            carried=carried or {},
            hook=step,
            config=config,
            lineage=lineage,
            embedding_dim=embedding_dim,
            metric=metric,
            item_count=item_count,
            metrics=metrics or {},
            extra=extra or {},
        )
        return self.commit(
            version_id,
            sealed,
            expected_current=expected_current,
            hook=step,
            keep_staging_on_conflict=keep_staging_on_conflict,
            kind=kind,
            swap=swap,
        )

    def seal(self, version_id: str, *, hook: Callable[[str], None], **fields: Any) -> Sealed:
        """The first half of `publish`: the staged files checked, the manifest written
        (`fields`: those of `publish.seal_staging`), everything fsynced and read back.
        Needs no lock (the staging folder is the caller's): a writer that must hold the
        publish lock briefly seals first, then `commit`s under it."""
        staging = self.staging_path(version_id)
        if self.layout.version_dir(version_id).exists():
            raise FileExistsError(f"{version_id}: version ids are single-use")
        manifest, manifest_sha256 = seal_staging(version_id, staging, step=hook, **fields)
        return Sealed(manifest, manifest_sha256)

    def commit(
        self,
        version_id: str,
        sealed: Sealed,
        *,
        expected_current: str | None,
        hook: Callable[[str], None] | None = None,
        keep_staging_on_conflict: bool = False,
        kind: VersionKind = "nightly",
        swap: bool = True,
    ) -> Manifest:
        """The second half of `publish` (its arguments): move the sealed staging folder
        into place and register it (and swap CURRENT), then prune."""
        step = hook or (lambda _step: None)
        manifest, manifest_sha256 = sealed.manifest, sealed.manifest_sha256
        lineage = manifest.lineage
        staging = self.staging_path(version_id)
        final = self.layout.version_dir(version_id)
        if final.exists():
            raise FileExistsError(f"{final} already exists; version ids are single-use")
        self._ensure_dir(self.layout.versions_dir)
        os.rename(staging, final)
        fsync_dir(self.layout.versions_dir)
        fsync_dir(staging.parent)
        step("renamed")
        if self.remote is not None:
            try:
                self.remote.upload_version(version_id, final, manifest_sha256)
            except (RemoteError, CorruptVersionError):
                # Never registered, so never visible: drop both copies.
                shutil.rmtree(final, ignore_errors=True)
                owner_path(staging).unlink(missing_ok=True)
                self._delete_remote(version_id)
                raise
        step("uploaded")

        try:
            self.registry.register_and_swap(
                version_id,
                expected=expected_current,
                created_at=manifest.created_at,
                data_snapshot=lineage.data_snapshot,
                kind=kind,
                manifest_sha256=manifest_sha256,
                swap=swap,
                # Retention walks these rows: the parent is the one the manifest names.
                parent=lineage.parent_version,
            )
        except PublishConflictError:
            # The transaction rolled back, so this folder was never CURRENT: safe to drop.
            if keep_staging_on_conflict:
                os.rename(final, staging)
                fsync_dir(staging.parent)
            else:
                shutil.rmtree(final)
                owner_path(staging).unlink(missing_ok=True)
                self._delete_remote(version_id)  # a retry of the same id would overwrite it
            fsync_dir(self.layout.versions_dir)
            raise
        except _REGISTRY_ERRORS:
            # E.g. disk full at the commit. Drop the folder only if the registry surely
            # does not hold it (a failed read leaves it to `collect_dead`).
            self._drop_if_unregistered(version_id, final, staging)
            raise
        step("committed")
        owner_path(staging).unlink(missing_ok=True)
        log.debug("published version %s (parent %s)", version_id, expected_current)
        if not swap:  # not on CURRENT's lineage yet: retention would take it
            return manifest

        try:
            self.prune()
        except _REGISTRY_ERRORS:
            # The publish itself is committed; a failed cleanup must not report it as failed.
            log.warning("pruning after publishing %s failed", version_id, exc_info=True)
        step("pruned")
        return manifest

    # -- moving CURRENT back, cleaning up ------------------------------------------------

    def rollback(
        self, version_id: str, expected_current: str | _ReadCurrent | None = _READ_CURRENT
    ) -> None:
        """Make registered, intact `version_id` CURRENT again (a delta: with its whole
        chain intact).

        `expected_current` defaults to CURRENT as read now; pass the value you saw to fail
        with `PublishConflictError` if someone else moved CURRENT since.
        """
        validate_id("version id", version_id)
        if self.registry.get(version_id) is None:
            raise VersionNotFoundError("cannot roll back: " + self._not_registered(version_id))
        # A delta is served on top of its chain: every version under it must be intact too.
        from storage.chains import resolve_chain, verify_chain

        verify_chain(self, resolve_chain(self, self._open(version_id, verify=False)))
        expected = (
            self.current() if isinstance(expected_current, _ReadCurrent) else expected_current
        )
        self.registry.compare_and_swap(expected, version_id, action="rollback")
        log.info("rolled back CURRENT %s -> %s", expected, version_id)

    def prune(self) -> list[str]:
        """Delete versions beyond the newest `keep_versions` nightly ones and the newest
        `keep_item_versions` item versions on CURRENT's lineage, never CURRENT; see
        `storage.retention.kept_versions`. Returns the pruned ids."""
        pruned = prune_versions(
            self.layout, self.registry, self.keep_versions, self.keep_item_versions, self.kind_of
        )
        for version_id in pruned:  # unregistered first, as on disk
            self._delete_remote(version_id)
        return pruned

    def discard(self, version_id: str) -> None:
        """Delete the staging folder of a version that will not be published."""
        staging = self.layout.staging_version_dir(version_id)
        ShardFolder.remove_version(self.layout, version_id)
        shutil.rmtree(staging, ignore_errors=True)
        if not staging.exists():
            owner_path(staging).unlink(missing_ok=True)

    def collect_dead(self, own: str | None = None, *, publish_locked: bool) -> list[Path]:
        """Remove staging left by dead processes at once, and with `publish_locked` (the
        caller holds `Layout.publish_lock`) unregistered version folders; the staging of
        version `own` is kept. See `storage.retention.collect_dead`."""
        keep = [self.layout.staging_version_dir(own)] if own else []
        removed = collect_dead(self.layout, self.registry, own=keep, publish_locked=publish_locked)
        if publish_locked and self.remote is not None:
            # Every publisher holds the lock from its upload to its commit: under it, an
            # unregistered remote folder was left by a dead one (or a failed prune).
            self.remote.remove_unregistered({r.version_id for r in self.registry.list_versions()})
        return removed

    def gc(self, min_age_s: float = DEFAULT_GC_AGE_S) -> list[Path]:
        """Remove unregistered version folders and abandoned staging folders idle for at
        least `min_age_s`; see `storage.retention.collect_garbage`."""
        return collect_garbage(self.layout, self.registry, min_age_s)

    # -- the remote ------------------------------------------------------------------------

    def _delete_remote(self, version_id: str) -> None:
        if self.remote is not None:
            self.remote.discard_version(version_id)

    # -- helpers ---------------------------------------------------------------------------

    def _drop_if_unregistered(self, version_id: str, final: Path, staging: Path) -> None:
        try:
            registered = self.registry.get(version_id) is not None
        except _REGISTRY_ERRORS:
            return
        if not registered:
            shutil.rmtree(final, ignore_errors=True)
            if not final.exists():
                owner_path(staging).unlink(missing_ok=True)

    def _ensure_dir(self, path: Path) -> None:
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.parent)

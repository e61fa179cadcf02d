"""Reading published versions: CURRENT, opening a version (fetched first into the cache
of an object-store root), verifying it against its manifest and the checksum the
registry recorded, listing. `storage.versions.VersionStore` adds staging, publishing,
rollback and cleanup on top. Nothing here writes, except an object-store root's cache.
"""

from __future__ import annotations

from collections.abc import Collection

from storage.backends import open_registry
from storage.database import DatabaseError, read_binding
from storage.errors import CorruptVersionError, NoCurrentVersionError, VersionNotFoundError
from storage.integrity import FileState, VersionCheck, check_version, verify_version
from storage.layout import Layout, validate_id
from storage.manifest import Manifest, read_manifest
from storage.publishing import writing
from storage.registry import VersionKind, VersionRow
from storage.remote_binding import read_remote
from storage.version_views import PublishedVersion, VersionInfo, kind_of, version_infos

__all__ = ["VersionReader"]


class VersionReader:
    """The versions registered for one `Layout`, read only. Constructing it touches no
    disk."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.registry = open_registry(layout)
        # The object store this root caches (s3://...), or None for a local store.
        self.remote = read_remote(layout)
        if self.remote is not None and read_binding(layout) is None:
            raise DatabaseError(
                f"{self.remote.shown} keeps its registry in PostgreSQL, which every machine "
                "shares: set TOWERFLOW_DATABASE_URL (the cache at "
                f"{layout.root} is bound to no database)"
            )

    def current(self) -> str | None:
        """The id CURRENT names, or None before the first publish."""
        return self.registry.current()

    def open_current(self, verify: bool = True) -> PublishedVersion:
        """Resolve CURRENT once and open that version (checksums checked if `verify`)."""
        vid = self.current()
        if vid is None:
            raise NoCurrentVersionError(f"nothing published yet in {self.registry.path}")
        return self._open(vid, verify)

    def open_version(self, version_id: str, verify: bool = True) -> PublishedVersion:
        """Open a registered version (checksums checked if `verify`)."""
        validate_id("version id", version_id)
        if self.registry.get(version_id) is None:
            raise VersionNotFoundError(self._not_registered(version_id))
        return self._open(version_id, verify)

    def _open(self, version_id: str, verify: bool) -> PublishedVersion:
        self._cache(version_id)
        path = self.layout.version_dir(version_id)
        manifest = self.verify(version_id) if verify else read_manifest(version_id, path)
        return PublishedVersion(version_id, path, manifest)

    def verify(self, version_id: str, files: Collection[str] | None = None) -> Manifest:
        """Check `versions/<id>/` against its manifest (or only `files` of it); return the
        manifest. The manifest itself is checked against the SHA-256 the registry recorded
        when the version was published.

        Raises `CorruptVersionError` naming the missing folder, a damaged or unreadable
        manifest, or the first file that is missing or has the wrong size or checksum.
        """
        row = self.registry.get(version_id)
        self._cache(version_id, row.manifest_sha256 if row is not None else None)
        return verify_version(
            version_id,
            self.layout.version_dir(version_id),
            row.manifest_sha256 if row is not None else None,
            files,
        )

    def check(self, version_id: str) -> VersionCheck:
        """Every file of a registered version against its manifest, file by file (unlike
        `verify`, which stops at the first bad one)."""
        validate_id("version id", version_id)
        row = self.registry.get(version_id)
        if row is None:
            raise VersionNotFoundError(self._not_registered(version_id))
        try:
            self._cache(version_id, row.manifest_sha256)  # an object-store root: fetch first
        except CorruptVersionError as e:
            state = FileState(e.file or "manifest.json", "unreadable", None, None, None, e.reason)
            return VersionCheck(version_id, (state,))
        return check_version(version_id, self.layout.version_dir(version_id), row.manifest_sha256)

    def kind_of(self, row: VersionRow) -> VersionKind:
        """The kind of a registered version (``storage.version_views.kind_of``)."""
        return kind_of(self.layout, row)

    def list_versions(self) -> list[VersionInfo]:
        """Registered versions, most recently published first."""
        return version_infos(self.layout, self.registry.list_versions(), self.current())

    # -- the remote ------------------------------------------------------------------------

    def _cache(self, version_id: str, manifest_sha256: str | None = None) -> None:
        """On a remote store, download a registered version the cache lacks, verified
        before it enters `versions/` (`RemoteStore.cache_version`)."""
        if self.remote is None or self.layout.version_dir(version_id).is_dir():
            return
        if manifest_sha256 is None:
            row = self.registry.get(version_id)
            if row is None:
                return  # not registered: nothing to fetch (the caller reports it)
            manifest_sha256 = row.manifest_sha256
        with writing(self.layout.root):
            self.remote.cache_version(self.layout, version_id, manifest_sha256)

    def _not_registered(self, version_id: str) -> str:
        known = [r.version_id for r in self.registry.list_versions()]
        db = self.registry.path
        return f"version {version_id!r} is not registered in {db} (registered: {known})"

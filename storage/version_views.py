"""What `VersionStore` hands out: an opened version, and the registered versions as
listed (read from the registry's rows and each version's manifest)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.errors import CorruptVersionError
from storage.layout import Layout, VersionFiles
from storage.manifest import Manifest, read_manifest
from storage.registry import VersionKind, VersionRow

__all__ = ["PublishedVersion", "VersionInfo", "kind_of", "version_infos"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedVersion:
    """An opened version. CURRENT was resolved once; later publishes do not change it."""

    version_id: str
    path: Path
    manifest: Manifest

    def file(self, name: str) -> Path:
        """Path of a file listed in the manifest (or the manifest itself)."""
        if name != VersionFiles.MANIFEST and name not in self.manifest.files:
            raise KeyError(
                f"version {self.version_id!r} has no file {name!r} "
                f"(has {sorted(self.manifest.files)})"
            )
        return self.path / name


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as listed by `VersionStore.list_versions`."""

    version_id: str
    is_current: bool
    created_at: str
    published_at: str
    parent: str | None
    data_snapshot: str | None
    kind: VersionKind = "nightly"
    # From the manifest; None / {} when it cannot be read (see `verify`).
    item_count: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def kind_of(layout: Layout, row: VersionRow) -> VersionKind:
    """The kind of a registered version; rows from before kinds were recorded are read
    from the manifest (item versions record their `coldstart` changes)."""
    if row.kind is not None:
        return row.kind
    try:
        m = read_manifest(row.version_id, layout.version_dir(row.version_id))
    except CorruptVersionError:
        return "nightly"
    return "items" if "coldstart" in m.extra else "nightly"


def version_infos(
    layout: Layout, rows: Sequence[VersionRow], current: str | None
) -> list[VersionInfo]:
    """``rows`` (newest first) as listed: each with its manifest's item count and metrics
    (none when the manifest cannot be read: logged, still listed)."""
    infos = []
    for row in rows:
        item_count: int | None = None
        metrics: dict[str, Any] = {}
        try:
            m = read_manifest(row.version_id, layout.version_dir(row.version_id))
            item_count, metrics = m.item_count, m.metrics
        except CorruptVersionError:
            log.warning("version %s has no readable manifest", row.version_id)
        infos.append(
            VersionInfo(
                version_id=row.version_id,
                is_current=row.version_id == current,
                created_at=row.created_at,
                published_at=row.published_at,
                parent=row.parent,
                data_snapshot=row.data_snapshot,
                kind=kind_of(layout, row),
                item_count=item_count,
                metrics=metrics,
            )
        )
    return infos

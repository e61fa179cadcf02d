"""What `VersionStore` hands out: an opened version, and a registered version as listed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.layout import VersionFiles
from storage.manifest import Manifest
from storage.registry import VersionKind

__all__ = ["PublishedVersion", "VersionInfo"]


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

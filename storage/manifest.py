"""The manifest of a published version: what it contains (files with checksums), how it
was made (config, lineage) and what it is (embedding dim, metric, item count)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from storage.artifacts import read_json, write_json
from storage.errors import CorruptVersionError
from storage.fs import sha256_file
from storage.layout import VersionFiles

__all__ = [
    "MANIFEST_FORMAT_VERSION",
    "FileEntry",
    "Lineage",
    "Manifest",
    "checksum_files",
    "read_manifest",
    "utc_now_iso",
    "verify_files",
]

MANIFEST_FORMAT_VERSION: Final = 1
MANIFEST_FILE: Final = VersionFiles.MANIFEST


def utc_now_iso() -> str:
    """Current time as ISO-8601 UTC with milliseconds, e.g. `2026-11-29T14:05:01.123+00:00`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class FileEntry(BaseModel):
    """Checksum and size of one file of a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the file.")
    bytes: int = Field(ge=0, description="File size in bytes.")


class Lineage(BaseModel):
    """Where a version came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_snapshot: str | None = Field(description="Data snapshot id it was trained on.")
    parent_version: str | None = Field(description="CURRENT when it was published.")
    catalogue_seq: int | None = Field(
        None,
        ge=0,
        description="Every item catalogue entry up to this sequence number is included "
        "(None: built without the catalogue).",
    )
    applied_events: tuple[str, ...] = Field(
        (), description="Catalogue events applied on top of the parent version."
    )


class Manifest(BaseModel):
    """`manifest.json` of a published version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = MANIFEST_FORMAT_VERSION
    version_id: str
    created_at: str = Field(description="ISO-8601 UTC time the manifest was written.")
    config: dict[str, Any] = Field(description="Configuration the version was built with.")
    lineage: Lineage
    embedding_dim: int = Field(ge=1, description="Dimension of user/item embeddings.")
    metric: str = Field(description="Similarity of the index, e.g. 'inner_product'.")
    item_count: int = Field(ge=0, description="Number of items in the index.")
    metrics: dict[str, Any] = Field(default_factory=dict, description="Offline evaluation.")
    extra: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, FileEntry] = Field(description="File name -> checksum, excluding itself.")

    @field_validator("format_version")
    @classmethod
    def _known_format(cls, v: int) -> int:
        if v != MANIFEST_FORMAT_VERSION:
            raise ValueError(
                f"manifest format_version {v} is not supported (this code reads "
                f"{MANIFEST_FORMAT_VERSION})"
            )
        return v

    @field_validator("created_at")
    @classmethod
    def _iso_utc(cls, v: str) -> str:
        offset = datetime.fromisoformat(v).utcoffset()
        if offset is None or offset.total_seconds() != 0:
            raise ValueError(f"created_at {v!r} must be ISO-8601 in UTC")
        return v

    def write(self, path: Path) -> None:
        """Write as sorted, indented JSON, atomically."""
        write_json(path, self.model_dump(mode="json"))

    @classmethod
    def read(cls, path: Path) -> Manifest:
        """Read and validate; `ValueError` naming the path if it is not a valid manifest."""
        data = read_json(path)
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise ValueError(f"{path}: invalid manifest: {e}") from e


def checksum_files(directory: Path, names: Iterable[str]) -> dict[str, FileEntry]:
    """`FileEntry` (sha256, size) of each named file in `directory`."""
    return {
        n: FileEntry(sha256=sha256_file(directory / n), bytes=(directory / n).stat().st_size)
        for n in names
    }


def read_manifest(version_id: str, path: Path) -> Manifest:
    """Read `path/manifest.json` of `version_id`; `CorruptVersionError` if unreadable or
    written for another version."""
    try:
        manifest = Manifest.read(path / MANIFEST_FILE)
    except (FileNotFoundError, ValueError) as e:
        raise CorruptVersionError(version_id, MANIFEST_FILE, str(e)) from e
    if manifest.version_id != version_id:
        raise CorruptVersionError(
            version_id, MANIFEST_FILE, f"names version {manifest.version_id!r}"
        )
    return manifest


def verify_files(
    version_id: str, path: Path, manifest: Manifest, names: Iterable[str] | None = None
) -> None:
    """Check every file of `manifest` (or only `names`) in folder `path`: present, same
    size, same sha256.

    Raises `CorruptVersionError` naming the first bad file.
    """
    wanted = set(manifest.files) if names is None else set(names)
    unknown = sorted(wanted - set(manifest.files))
    if unknown:
        raise CorruptVersionError(version_id, unknown[0], "not listed in the manifest")
    for name, entry in sorted(manifest.files.items()):
        if name not in wanted:
            continue
        p = path / name
        if not p.is_file():
            raise CorruptVersionError(version_id, name, f"missing (expected {p})")
        size = p.stat().st_size
        if size != entry.bytes:
            raise CorruptVersionError(
                version_id, name, f"{p} has {size} bytes, manifest says {entry.bytes}"
            )
        digest = sha256_file(p)
        if digest != entry.sha256:
            raise CorruptVersionError(
                version_id, name, f"{p} has sha256 {digest}, manifest says {entry.sha256}"
            )

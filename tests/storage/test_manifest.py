"""The version manifest: JSON round trip, validation, checksums."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage import CorruptVersionError, FileEntry, Lineage, Manifest
from storage.manifest import checksum_files, read_manifest, utc_now_iso, verify_files


def _manifest(files: dict[str, FileEntry] | None = None) -> Manifest:
    return Manifest(
        version_id="v1",
        created_at=utc_now_iso(),
        config={"dim": 8, "lr": 0.01},
        lineage=Lineage(data_snapshot="snap", parent_version=None),
        embedding_dim=8,
        metric="inner_product",
        item_count=100,
        metrics={"recall@10": 0.3},
        files=files or {},
    )


def test_manifest_json_round_trip(tmp_path: Path) -> None:
    m = _manifest({"a.bin": FileEntry(sha256="0" * 64, bytes=3)})
    m.write(tmp_path / "manifest.json")
    assert Manifest.read(tmp_path / "manifest.json") == m
    assert read_manifest("v1", tmp_path) == m
    with pytest.raises(CorruptVersionError, match="names version 'v1'"):
        read_manifest("v2", tmp_path)


def test_manifest_rejects_unknown_format_and_non_utc_time() -> None:
    data = _manifest().model_dump()
    with pytest.raises(ValueError, match="format_version 2 is not supported"):
        Manifest.model_validate({**data, "format_version": 2})
    with pytest.raises(ValueError, match="must be ISO-8601 in UTC"):
        Manifest.model_validate({**data, "created_at": "2026-01-01T00:00:00+02:00"})
    with pytest.raises(ValueError, match="Extra inputs"):
        Manifest.model_validate({**data, "surprise": 1})


def test_invalid_manifest_file_is_reported_with_path(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"version_id": "v1"}')
    with pytest.raises(CorruptVersionError, match="invalid manifest") as err:
        read_manifest("v1", tmp_path)
    assert err.value.file == "manifest.json"


def test_checksums_match_hashlib_and_detect_changes(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"hello")
    (tmp_path / "b.bin").write_bytes(b"")
    files = checksum_files(tmp_path, ["a.bin", "b.bin"])
    assert files["a.bin"] == FileEntry(sha256=hashlib.sha256(b"hello").hexdigest(), bytes=5)
    assert files["b.bin"].bytes == 0
    m = _manifest(files)
    verify_files("v1", tmp_path, m)

    (tmp_path / "a.bin").write_bytes(b"hellO")  # same size, different content
    with pytest.raises(CorruptVersionError, match=r"a\.bin.*has sha256") as err:
        verify_files("v1", tmp_path, m)
    assert err.value.file == "a.bin"
    (tmp_path / "b.bin").unlink()
    (tmp_path / "a.bin").write_bytes(b"hello")
    with pytest.raises(CorruptVersionError, match=r"'b\.bin': missing"):
        verify_files("v1", tmp_path, m)

"""Layout (the one place paths are built) and StorageSettings."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import (
    CATEGORIES,
    IMPRESSIONS,
    INTERACTIONS,
    ITEM_EMBEDDINGS,
    ITEMS,
    TRUTH_ITEMS,
    TRUTH_USERS,
    USERS,
    VERSION_ITEMS,
    VERSION_USERS,
    Layout,
    SnapshotFiles,
    StorageSettings,
    VersionFiles,
)


def test_paths_under_root() -> None:
    layout = Layout(Path("/srv/tf"))
    assert layout.registry_db == Path("/srv/tf/registry.sqlite")
    assert layout.data_dir == Path("/srv/tf/data")
    assert layout.snapshot_dir("s-1") == Path("/srv/tf/data/s-1")
    assert layout.versions_dir == Path("/srv/tf/versions")
    assert layout.version_dir("v1.2_x") == Path("/srv/tf/versions/v1.2_x")
    assert layout.staging_dir == Path("/srv/tf/staging")
    assert layout.staging_version_dir("v1").parent.parent == layout.staging_dir
    assert layout.staging_snapshot_dir("s-1", "ab12").parent.parent == layout.staging_dir
    assert Layout("rel").root == Path("rel")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", ["", ".", "..", "a/b", "../x", "a..b", ".hidden", "a b", "é", "x" * 201]
)
def test_ids_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid version id"):
        Layout(Path("/r")).version_dir(bad)


def test_file_name_constants_match_table_specs() -> None:
    snapshot = {v for k, v in vars(SnapshotFiles).items() if k.isupper()} - {SnapshotFiles.MANIFEST}
    specs = (USERS, ITEMS, CATEGORIES, INTERACTIONS, IMPRESSIONS, TRUTH_USERS, TRUTH_ITEMS)
    assert snapshot == {spec.file_name for spec in specs}
    assert VERSION_USERS.file_name == VersionFiles.USERS
    assert VERSION_ITEMS.file_name == VersionFiles.ITEMS
    assert ITEM_EMBEDDINGS.file_name == VersionFiles.ITEM_EMBEDDINGS


def test_settings_read_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert StorageSettings().root == ".towerflow"
    # Kept a string: an object-store root is not a path (Path("s3://b/p") drops a slash).
    monkeypatch.setenv("TOWERFLOW_ROOT", "s3://bucket/prefix")
    assert StorageSettings().root == "s3://bucket/prefix"
    monkeypatch.setenv("TOWERFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("TOWERFLOW_KEEP_VERSIONS", "2")
    monkeypatch.setenv("TOWERFLOW_SOMETHING_ELSE", "ignored")
    settings = StorageSettings()
    assert settings.layout() == Layout(tmp_path)
    assert settings.keep_versions == 2
    monkeypatch.setenv("TOWERFLOW_KEEP_VERSIONS", "0")
    with pytest.raises(ValueError, match="keep_versions"):
        StorageSettings()

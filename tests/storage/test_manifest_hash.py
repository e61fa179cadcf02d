"""The manifest holds every other file's checksum; its own is recorded in the registry
row at publish. A flip that leaves valid JSON (a metric's digit, the catalogue position)
used to pass every check and be served, rolled back to and copied into new versions."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from storage import CorruptVersionError, VersionFiles, VersionStore
from tests.storage.publisher import publish_staged, stage_version


def _publish(store: VersionStore, seed: int) -> str:
    vid = stage_version(store, seed=seed)
    publish_staged(store, vid, store.current())
    return vid


def _flip_valid_json(path: Path) -> None:
    """Change one character so that the manifest stays valid JSON (and a valid manifest)."""
    data = json.loads(path.read_text())
    data["item_count"] += 1
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def test_a_manifest_that_still_parses_but_changed_fails_verify(store: VersionStore) -> None:
    first = _publish(store, 1)
    second = _publish(store, 2)
    manifest = store.layout.version_dir(second) / VersionFiles.MANIFEST
    _flip_valid_json(manifest)

    with pytest.raises(CorruptVersionError, match=r"manifest\.json.*registry recorded"):
        store.verify(second)
    with pytest.raises(CorruptVersionError):
        store.open_current()
    check = store.check(second)
    assert not check.intact
    assert [(f.name, f.status) for f in check.problems] == [("manifest.json", "wrong checksum")]
    store.rollback(first)  # the other version is untouched
    with pytest.raises(CorruptVersionError):
        store.rollback(second)


def test_versions_from_before_the_recorded_hash_still_verify(store: VersionStore) -> None:
    vid = _publish(store, 1)
    with sqlite3.connect(store.layout.registry_db) as conn:
        conn.execute("UPDATE versions SET manifest_sha256 = NULL")
    assert store.registry.get(vid).manifest_sha256 is None  # type: ignore[union-attr]
    store.verify(vid)
    assert store.check(vid).intact


def test_an_old_registry_gains_the_columns_on_its_first_write(tmp_path: Path) -> None:
    """A registry from before `kind` and `manifest_sha256` reads (as None) and migrates."""
    from storage import Layout

    layout = Layout(tmp_path / "old")
    layout.root.mkdir()
    with sqlite3.connect(layout.registry_db) as conn:
        conn.executescript(
            """
            CREATE TABLE current (id INTEGER PRIMARY KEY CHECK (id = 1), version_id TEXT);
            INSERT INTO current VALUES (1, NULL);
            CREATE TABLE versions (version_id TEXT PRIMARY KEY, created_at TEXT NOT NULL,
                published_at TEXT NOT NULL, parent TEXT, data_snapshot TEXT);
            CREATE TABLE events (ts TEXT NOT NULL, action TEXT NOT NULL,
                from_version TEXT, to_version TEXT);
            INSERT INTO versions VALUES ('vold', '2026-01-01T00:00:00+00:00',
                '2026-01-01T00:00:00+00:00', NULL, NULL);
            """
        )
    store = VersionStore(layout)
    [row] = store.registry.list_versions()
    assert (row.kind, row.manifest_sha256) == (None, None)
    vid = _publish(store, 3)
    new = store.registry.get(vid)
    assert new is not None and new.kind == "nightly" and new.manifest_sha256 is not None

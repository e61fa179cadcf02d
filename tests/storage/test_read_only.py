"""A read-only store can be read, and reading writes nothing (issue #14 item 5).

The store is made read-only with a read-only bind mount in a private mount namespace
(see `tests/storage/readonly.py`): the tests run as root, for whom file permissions are
no protection. Readers and writers run in that child; this process checks the results
and that the store's tree (names, sizes, mtimes) did not change.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from storage import (
    CatalogueLog,
    ItemUpsert,
    Layout,
    StoreReadOnlyError,
    VersionStore,
)
from tests.storage.publisher import publish_staged, stage_version
from tests.storage.readonly import child_json, python, read_only, tree

READS = "import sys; from tests.storage.readonly import reads; reads(sys.argv[1])"
WRITES = "import sys; from tests.storage.readonly import writes; writes(sys.argv[1])"


def _content(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=4).astype(np.float32)


def _files(entries: dict[str, tuple[bool, int, int]]) -> dict[str, tuple[bool, int, int]]:
    """`tree` without the mtimes of folders."""
    return {k: (d, size, 0 if d else mtime) for k, (d, size, mtime) in entries.items()}


def _fill(layout: Layout) -> tuple[str, str]:
    """Two published versions (the second CURRENT) and three catalogue events; every
    writer closed, so the catalogue has no -wal file."""
    store = VersionStore(layout)
    v1 = stage_version(store, seed=1)
    publish_staged(store, v1, None)
    v2 = stage_version(store, seed=2)
    publish_staged(store, v2, v1)
    catalogue = CatalogueLog(layout.catalogue_db)
    catalogue.append_upserts("e1", [ItemUpsert(1, 0, _content(1)), ItemUpsert(2, 1, _content(2))])
    catalogue.append_retirements("e2", [1])
    catalogue.append_upserts("e3", [ItemUpsert(3, 2, _content(3))])
    assert not Path(f"{layout.catalogue_db}-wal").exists()
    return v1, v2


def test_readers_work_on_a_read_only_store_and_change_nothing(layout: Layout) -> None:
    v1, v2 = _fill(layout)
    before = tree(layout.root)
    with read_only(layout.root) as run:
        got = child_json(run(python(READS, str(layout.root))))
    assert tree(layout.root) == before
    assert got["current"] == got["open_current"] == v2
    assert [v[:2] for v in got["versions"]] == [[v2, True], [v1, False]]
    assert got["opened"] == got["verified"] == [v2, v1]
    assert [e[0] for e in got["events"]] == ["publish", "publish"]
    assert (got["head"], got["has_e1"], got["seq_e2"], got["seq_missing"]) == (4, True, 3, None)
    assert got["changes_0"]["upserted"] == [2, 3] and got["changes_0"]["retired"] == [1]
    assert got["changes_0"]["events"] == ["e1", "e2", "e3"]
    assert got["changes_1"]["upto"] == 4 and got["changes_1"]["upserted"] == [2, 3]
    # The same answers as a reader of the writable store gets.
    assert got["changes_0"]["content"] == np.stack([_content(2), _content(3)]).tolist()


def test_a_read_only_catalogue_sees_commits_a_live_writer_holds_in_its_wal(
    layout: Layout,
) -> None:
    _fill(layout)
    catalogue = CatalogueLog(layout.catalogue_db)
    # A connection kept open stops the appender from checkpointing on close: the last
    # event is only in the -wal file, as while a writer on another mount is running.
    keeper = sqlite3.connect(layout.catalogue_db, isolation_level=None)
    try:
        keeper.execute("SELECT COUNT(*) FROM entries").fetchone()
        catalogue.append_upserts("e4", [ItemUpsert(4, 0, _content(4))])
        assert Path(f"{layout.catalogue_db}-wal").stat().st_size > 0
        with read_only(layout.root) as run:
            got = child_json(run(python(READS, str(layout.root))))
    finally:
        keeper.close()
    assert got["head"] == 5 and got["changes_0"]["upserted"] == [2, 3, 4]


def test_writers_on_a_read_only_store_fail_clearly_and_change_nothing(layout: Layout) -> None:
    v1, v2 = _fill(layout)
    before = tree(layout.root)
    with read_only(layout.root) as run:
        got = child_json(run(python(WRITES, str(layout.root))))
    assert tree(layout.root) == before
    writers = {"begin", "register", "append_upserts", "append_retirements", "rollback", "prune"}
    assert set(got) == writers
    _assert_refused(got, layout.root)
    store = VersionStore(layout)
    assert store.current() == v2 and [v.version_id for v in store.list_versions()] == [v2, v1]
    assert CatalogueLog(layout.catalogue_db).head() == 4
    # Permanent (tasks.retry does not retry a PermissionError), and still an OSError.
    assert issubclass(StoreReadOnlyError, PermissionError)


def _assert_refused(got: dict[str, list[str] | None], root: Path) -> None:
    for name, raised in got.items():
        assert raised is not None, f"{name} succeeded on a read-only store"
        kind, message = raised
        assert kind == "StoreReadOnlyError", (name, raised)
        assert str(root) in message and "read-only" in message, (name, message)


def test_a_read_only_store_without_versions_reads_as_empty(tmp_path: Path) -> None:
    # A writer died between creating the database files and committing their schema.
    layout = Layout(tmp_path / "store")
    layout.root.mkdir()
    layout.registry_db.touch()
    layout.catalogue_db.touch()
    # An empty folder, and no folder at all: stores never written.
    empty, never = layout.root / "empty", layout.root / "never-written"
    empty.mkdir()
    before = tree(layout.root)
    with read_only(layout.root) as run:
        got = [child_json(run(python(READS, str(r)))) for r in (layout.root, empty, never)]
        refused = [child_json(run(python(WRITES, str(r)))) for r in (layout.root, empty, never)]
    assert tree(layout.root) == before
    for result in got:
        assert (result["current"], result["versions"], result["events"]) == (None, [], [])
        assert (result["head"], result["has_e1"], result["seq_e2"]) == (0, False, None)
        assert result["changes_0"]["upserted"] == result["changes_0"]["retired"] == []
    for root, attempts in zip((layout.root, empty, never), refused, strict=True):
        assert len(attempts) == 4
        _assert_refused(attempts, root)


def test_readers_leave_a_writable_store_unchanged(tmp_path: Path) -> None:
    """Reads create no file, write no schema and leave no -wal/-shm behind. (A catalogue
    reader, like any connection to a WAL database in a writable folder, creates the
    -wal/-shm files and removes them on close: that moves the folder's mtime only.)"""
    full, empty = Layout(tmp_path / "full"), Layout(tmp_path / "empty")
    _fill(full)
    empty.root.mkdir()
    empty.registry_db.touch()
    empty.catalogue_db.touch()
    for layout in (full, empty):
        before = _files(tree(layout.root))
        store, catalogue = VersionStore(layout), CatalogueLog(layout.catalogue_db)
        for vid in [store.current(), *(v.version_id for v in store.list_versions())]:
            if vid is not None:
                store.open_version(vid, verify=True)
        store.registry.events()
        catalogue.head()
        catalogue.has_event("e1")
        catalogue.changes(0)
        assert _files(tree(layout.root)) == before, layout.root

"""Cold-start versions: created items are embedded and indexed, upserts replace, repeats
are no-ops, retirements leave results (removed, or tombstoned where the index cannot)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.catalogue_apply import apply_changes, read_catalogue_state
from core.catalogue_sync import sync_current
from core.recall import Recaller
from storage import (
    CatalogueChanges,
    CatalogueLog,
    Layout,
    NoCurrentVersionError,
    VersionFiles,
    VersionStore,
)
from tests.core.items.conftest import N_ITEMS, MakeStore, item
from tests.core.items.helpers import create, held_ids, retire, top1_for_own_vector


def test_created_items_are_published_embedded_and_retrievable(make_store: MakeStore) -> None:
    store = make_store("Flat")
    parent = store.current()
    result = create(store.layout, "e1", [item(1001, category=2), item(1002, category=99)])
    assert result.published and result.version_id == store.current() != parent
    manifest = store.open_current().manifest
    assert manifest.item_count == N_ITEMS + 2
    assert manifest.lineage.parent_version == parent
    assert manifest.lineage.catalogue_seq == 2
    assert manifest.lineage.applied_events == ("e1",)
    recaller = Recaller.load(store)  # checks index == items table, probe queries
    assert {1001, 1002} <= set(held_ids(recaller).tolist())
    assert top1_for_own_vector(store, recaller, 1001) == 1001
    row = np.searchsorted(recaller.tables.item_id, 1002)
    assert recaller.tables.item_id_row[row] == 0  # the unknown-ID bucket
    assert recaller.tables.category[row] == 99


def test_upsert_replaces_the_vector_and_keeps_one_copy(make_store: MakeStore) -> None:
    store = make_store("Flat")
    create(store.layout, "e1", [item(1001, category=1, seed=1)])
    before = Recaller.load(store)
    create(store.layout, "e2", [item(1001, category=3, seed=2), item(20, seed=3)])
    after = Recaller.load(store)
    ids = held_ids(after).tolist()
    assert ids.count(1001) == 1 and ids.count(20) == 1 and len(ids) == N_ITEMS + 1
    row = np.searchsorted(after.tables.item_id, 1001)
    assert after.tables.category[row] == 3
    assert after.tables.item_id_row[np.searchsorted(after.tables.item_id, 20)] == 2  # kept
    assert before.version_id != after.version_id
    assert top1_for_own_vector(store, after, 1001) == 1001


def test_repeated_event_and_identical_content_publish_nothing(make_store: MakeStore) -> None:
    store = make_store("Flat")
    first = create(store.layout, "e1", [item(1001)])
    assert not create(store.layout, "e1", [item(1001), item(1002)]).published
    assert not create(store.layout, "e2", [item(1001)]).published  # same content
    assert store.current() == first.version_id
    assert held_ids(Recaller.load(store)).tolist().count(1002) == 0


def test_retire_removes_items_from_a_removable_index(make_store: MakeStore) -> None:
    store = make_store("IVF4,Flat")
    create(store.layout, "e1", [item(1001)])
    retire(store.layout, "r1", [1001, 30, 123456])  # an unknown ID is ignored
    recaller = Recaller.load(store)
    assert recaller.index.ntotal == N_ITEMS - 1 and recaller.manifest is not None
    assert recaller.manifest.item_count == N_ITEMS - 1
    assert not {1001, 30} & set(held_ids(recaller).tolist())
    assert len(recaller.tombstones) == 0


def test_retire_on_hnsw_leaves_tombstones_that_recall_filters(make_store: MakeStore) -> None:
    store = make_store("HNSW16")
    retire(store.layout, "r1", [10, 20, 30])
    recaller = Recaller.load(store)
    assert recaller.index.ntotal == N_ITEMS and recaller.n_items == N_ITEMS - 3
    assert recaller.tombstones.tolist() == [10, 20, 30]
    for user in range(1, 21):
        got = {r.item_id for r in recaller.recommend(user, k=10)}
        assert len(got) == 10 and not got & {10, 20, 30}
        got = recaller.recall(user, k=5, exclude_categories=[0]).item_ids.tolist()
        assert len(got) == 5 and not set(got) & {10, 20, 30}


def test_upsert_of_a_held_item_on_hnsw_goes_to_the_overlay(make_store: MakeStore) -> None:
    """HNSW cannot replace a vector: an updated (or revived) item's current vector is
    searched beside the index, its old one blocked; nothing is rebuilt or added twice."""
    store = make_store("HNSW16")
    retire(store.layout, "r1", [10])
    create(store.layout, "e1", [item(20, seed=5), item(10, seed=6), item(5000)])
    recaller = Recaller.load(store)
    ids = held_ids(recaller).tolist()
    assert len(ids) == len(set(ids)) == N_ITEMS + 1 and recaller.index.ntotal == N_ITEMS + 1
    assert len(recaller.tombstones) == 0  # 10 came back
    assert recaller.overlay.fresh_ids.tolist() == [10, 20]
    for item_id in (10, 20, 5000):
        assert top1_for_own_vector(store, recaller, item_id) == item_id


def test_items_before_the_first_version_wait_in_the_catalogue(tmp_path) -> None:  # type: ignore[no-untyped-def]
    layout = Layout(tmp_path / "empty")
    CatalogueLog(layout.catalogue_db).append_upserts("e1", [])
    with pytest.raises(NoCurrentVersionError, match="run the nightly flow once first"):
        sync_current(layout)


def test_a_rollback_racing_a_sync_is_never_overwritten(make_store: MakeStore) -> None:
    store = make_store("Flat")
    first = store.current()
    create(store.layout, "e1", [item(1001)])
    store.rollback(str(first))  # CURRENT back to a version without 1001
    result = sync_current(store.layout)  # re-applies entries the rolled-back-to lacks
    assert result.published and store.open_current().manifest.lineage.parent_version == first
    assert 1001 in held_ids(Recaller.load(VersionStore(store.layout))).tolist()


def test_changes_that_change_nothing_only_move_the_catalogue_state(
    make_store: MakeStore, tmp_path: Path
) -> None:
    """An empty catch-up (a nightly's catalogue merge or its publish with nothing new, or
    entries that change nothing) leaves the tables and index untouched: no 1M-item folder
    read and rewritten for nothing."""
    store = make_store("Flat")
    folder = tmp_path / "copy"
    shutil.copytree(store.open_current().path, folder)
    names = (VersionFiles.ITEMS, VersionFiles.ITEM_EMBEDDINGS, VersionFiles.INDEX)
    before = {n: ((folder / n).read_bytes(), (folder / n).stat().st_mtime_ns) for n in names}
    seq, applied = read_catalogue_state(folder)
    nothing = CatalogueChanges(
        after=seq,
        upto=seq + 2,
        upsert_id=np.empty(0, np.int64),
        upsert_category=np.empty(0, np.int32),
        upsert_content=np.empty((0, 3), np.float32),
        retired_id=np.empty(0, np.int64),
        event_ids=("e-noop",),
    )
    summary = apply_changes(folder, nothing, None)
    assert (summary.seq, summary.n_items, summary.upserted, summary.retired) == (
        seq + 2,
        N_ITEMS,
        0,
        0,
    )
    assert summary.applied_events == (*applied, "e-noop") and not summary.rebuilt_index
    assert read_catalogue_state(folder) == (seq + 2, (*applied, "e-noop"))
    for n in names:
        assert ((folder / n).read_bytes(), (folder / n).stat().st_mtime_ns) == before[n], n

"""Items events as deltas (core.deltas, core.delta_publish) and compaction
(core.compaction): a delta holds only what its event changed and touches no base file;
reading base + chain equals applying the same entries to a full copy; compaction folds
a chain into one complete version without losing a delta published meanwhile; a broken
or damaged chain is refused by name; retention keeps every chain a kept version needs."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import core.compaction as compaction
import core.delta_publish as delta_publish
from core.catalogue_apply import apply_changes, write_catalogue_state
from core.catalogue_sync import sync_current
from core.compaction import chain_depth, compact_current, compaction_request
from core.deltas import DELTA_FILES, resolve_chain
from core.items_validation import validate_upserts
from core.recall import Recaller, VersionRejectedError
from core.versionio import read_embeddings
from storage import (
    VERSION_ITEMS,
    CatalogueLog,
    CorruptVersionError,
    PublishedVersion,
    VersionFiles,
    VersionStore,
    read_table,
)
from storage.chains import same_items_as
from tests.core.items.conftest import CONTENT_DIM, N_ITEMS, MakeStore, item, publish_mini_version
from tests.core.items.helpers import create, held_ids, retire, top1_for_own_vector


def _events(store: VersionStore) -> None:
    """Creates, an update of a base item, an update of a created one, retirements."""
    layout = store.layout
    create(layout, "e1", [item(1001, category=2), item(1002, category=99)])
    create(layout, "e2", [item(20, category=3, seed=7), item(1003)])
    retire(layout, "r1", [30, 1002])
    create(layout, "e3", [item(1001, category=4, seed=8), item(1004)])
    retire(layout, "r2", [40])


def _stat(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_a_delta_holds_only_the_event_and_touches_no_base_file(
    make_store: MakeStore, factory: str
) -> None:
    store = make_store(factory)
    base = store.open_current()
    before = {n: _stat(base.path / n) for n in base.manifest.files}
    _events(store)
    head = store.open_current()
    chain = resolve_chain(store, head)
    assert chain.base.version_id == base.version_id and len(chain.deltas) == 5
    assert chain_depth(store) == 5 and head.manifest.extra["delta"]["base"] == base.version_id
    for d in chain.deltas:
        assert set(d.manifest.files) == set(DELTA_FILES)
        assert sum(e.bytes for e in d.manifest.files.values()) < 20_000  # O(batch)
    assert {n: _stat(base.path / n) for n in base.manifest.files} == before
    assert [v.kind for v in store.list_versions()] == ["delta"] * 5 + ["nightly"]
    # What a reader serves: every created item once, retired ones never.
    recaller = Recaller.load(store)
    served = set(recaller.tables.item_id.tolist())
    assert {1001, 1003, 1004, 20} <= served and not {30, 40, 1002} & served
    assert recaller.n_items == N_ITEMS + 1 == head.manifest.item_count  # 4 new, 3 retired
    found = [r.item_id for u in range(1, 11) for r in recaller.recommend(u, k=20)]
    assert not {30, 40, 1002} & set(found)
    assert top1_for_own_vector(store, recaller, 1001) == 1001


def test_base_plus_chain_equals_the_entries_applied_to_a_full_copy(
    make_store: MakeStore, tmp_path: Path
) -> None:
    store = make_store("Flat")
    base = store.open_current()
    _events(store)
    recaller = Recaller.load(store)
    # The reference: the same catalogue entries applied to a full copy of the base, the
    # way items versions were built before deltas.
    copy = tmp_path / "copy"
    shutil.copytree(base.path, copy)
    write_catalogue_state(copy, 0, ())
    apply_changes(copy, CatalogueLog(store.layout.catalogue_db).changes(0), None)
    items = read_table(copy / VersionFiles.ITEMS, VERSION_ITEMS)
    assert recaller.tables.item_id.tolist() == items.column("item_id").to_pylist()
    assert recaller.tables.item_id_row.tolist() == items.column("id_row").to_pylist()
    assert recaller.tables.category.tolist() == items.column("category").to_pylist()
    ids, vectors = read_embeddings(copy)
    assert held_ids(recaller).tolist() == ids.tolist()
    compact_current(store.layout)
    compacted = store.open_current()
    ids2, vectors2 = read_embeddings(compacted.path)
    assert ids2.tolist() == ids.tolist()
    np.testing.assert_allclose(vectors2, vectors, atol=1e-6)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_compaction_folds_the_chain_into_one_complete_version(
    make_store: MakeStore, factory: str
) -> None:
    store = make_store(factory)
    base = store.open_current()
    _events(store)
    head = store.open_current()
    served = Recaller.load(store)
    result = compact_current(store.layout)
    assert result.compacted and result.folded == 5 and store.current() == result.version_id
    done = store.open_current(verify=True)
    assert done.manifest.lineage.parent_version == head.version_id
    assert done.manifest.lineage.catalogue_seq == head.manifest.lineage.catalogue_seq
    assert "delta" not in done.manifest.extra and chain_depth(store) == 0
    assert resolve_chain(store, done).deltas == ()
    for name in (VersionFiles.MODEL_WEIGHTS, VersionFiles.USERS):  # carried, not re-hashed
        assert done.manifest.files[name] == base.manifest.files[name]
    after = Recaller.load(store)
    assert after.tables.item_id.tolist() == served.tables.item_id.tolist()
    # The same live vectors; a rebuilt HNSW holds no tombstones where the chain had some.
    live = [np.setdiff1d(held_ids(r), r.tombstones).tolist() for r in (after, served)]
    assert live[0] == live[1] == after.tables.item_id.tolist()
    for u in range(1, 11):
        got, want = ([r.item_id for r in x.recommend(u, k=10)] for x in (after, served))
        if factory == "Flat":  # exact search: the same answers
            assert got == want
        else:  # a rebuilt graph is another approximation of the same vectors
            assert len(set(got) & set(want)) >= 8
    assert not compact_current(store.layout).compacted  # nothing left to fold
    create(store.layout, "e9", [item(1009)])  # later deltas stack on the compacted one
    assert resolve_chain(store, store.open_current()).base.version_id == done.version_id


def test_deltas_published_during_a_compaction_are_rebased_on_it(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slow fold runs outside the publish lock; a delta published meanwhile is not
    folded in under the lock (a rewrite of the whole catalogue while events wait) but
    published again on top of the compaction (core.rebase)."""
    store = make_store("Flat")
    _events(store)
    real_fold = compaction.fold_deltas
    calls: list[int] = []
    late: list[PublishedVersion] = []

    def fold_then_publish(folder, deltas, recipe):  # type: ignore[no-untyped-def]
        real_fold(folder, deltas, recipe)
        if not calls:  # the slow fold ran outside the lock: an event lands meanwhile
            create(store.layout, "late", [item(7777)])
            late.append(store.open_current())
        calls.append(len(deltas))

    monkeypatch.setattr(compaction, "fold_deltas", fold_then_publish)
    result = compact_current(store.layout)
    assert result.compacted and calls == [5] and result.folded == 5
    head = store.open_current()
    assert result.version_id == head.version_id and chain_depth(store) == 1
    chain = resolve_chain(store, head)
    compacted = chain.base
    assert compacted.manifest.extra["compacted"]["folded"] == 5
    (original,) = late
    assert same_items_as(head) == original.version_id and same_items_as(compacted) is not None
    # The rebased delta is the late one's files, under a new manifest on the compaction.
    assert original.manifest.files == head.manifest.files
    assert head.manifest.lineage.catalogue_seq == original.manifest.lineage.catalogue_seq
    recaller = Recaller.load(store)
    assert 7777 in recaller.tables.item_id.tolist() and len(recaller.tables.item_id) == (
        original.manifest.item_count
    )
    create(store.layout, "after", [item(7778)])  # and later events stack on it
    assert resolve_chain(store, store.open_current()).base.version_id == compacted.version_id


def test_entries_no_version_holds_go_on_top_of_a_compaction_as_a_delta(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Acknowledged while the fold ran, not yet published (an event in flight, or one
    that died): not folded in under the lock (a rewrite of the whole catalogue while
    events wait) but published as one delta on top of the rebased ones."""
    store = make_store("Flat")
    _events(store)
    real_fold = compaction.fold_deltas
    calls: list[int] = []

    def fold_then_publish(folder, deltas, recipe):  # type: ignore[no-untyped-def]
        real_fold(folder, deltas, recipe)
        if not calls:
            create(store.layout, "late", [item(7777)])
            valid = validate_upserts([item(7779)], CONTENT_DIM, 10)
            CatalogueLog(store.layout.catalogue_db).append_upserts("died", valid.upserts)
        calls.append(len(deltas))

    monkeypatch.setattr(compaction, "fold_deltas", fold_then_publish)
    result = compact_current(store.layout)
    assert result.compacted and calls == [5] and result.folded == 5
    assert chain_depth(store) == 2  # the rebased late delta, then the pending entry
    head = store.open_current()
    assert head.manifest.lineage.applied_events == ("died",)
    assert {7777, 7779} <= set(Recaller.load(store).tables.item_id.tolist())


def test_a_nightly_published_during_a_compaction_supersedes_it(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store("Flat")
    _events(store)
    real_fold = compaction.fold_deltas

    def fold_then_nightly(folder, deltas, recipe):  # type: ignore[no-untyped-def]
        real_fold(folder, deltas, recipe)
        publish_mini_version(store.layout.root, seed=3)

    monkeypatch.setattr(compaction, "fold_deltas", fold_then_nightly)
    nightly_before = {v.version_id for v in store.list_versions()}
    result = compact_current(store.layout)
    assert not result.compacted
    current = store.open_current()
    assert current.version_id not in nightly_before and "delta" not in current.manifest.extra
    assert not list(store.layout.staging_versions_dir.iterdir())  # the fold was dropped


def test_a_broken_or_damaged_chain_is_refused_by_name(make_store: MakeStore) -> None:
    store = make_store("Flat")
    _events(store)
    chain = resolve_chain(store, store.open_current())
    middle = chain.deltas[2]
    damaged = middle.path / VersionFiles.DELTA_ITEMS
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 1
    damaged.write_bytes(bytes(data))
    with pytest.raises(CorruptVersionError, match=VersionFiles.DELTA_ITEMS):
        Recaller.load(store)
    # A publisher that has not read the chain yet (a new process) checks it first and
    # derives nothing from damaged bytes. (One that has keeps its verified copy in memory.)
    delta_publish._known.clear()
    with pytest.raises(CorruptVersionError, match=VersionFiles.DELTA_ITEMS):
        create(store.layout, "after", [item(8888)])
    with pytest.raises(CorruptVersionError, match=VersionFiles.DELTA_ITEMS):
        compact_current(store.layout)
    shutil.rmtree(middle.path)  # a delta folder gone: the chain is broken there
    with pytest.raises(CorruptVersionError):
        Recaller.load(store)


def test_retention_keeps_every_chain_a_kept_version_needs(make_store: MakeStore) -> None:
    store = make_store("Flat")
    layout = store.layout
    for n in range(6):
        CatalogueLog(layout.catalogue_db).append_upserts(f"e{n}", [_upsert(5000 + n)])
        sync_current(layout, keep_versions=2, keep_item_versions=2)
    kinds = [v.kind for v in VersionStore(layout).list_versions()]
    assert kinds == ["delta"] * 6 + ["nightly"]  # the whole chain: CURRENT needs it
    Recaller.load(VersionStore(layout))
    compact_current(layout, keep_versions=2, keep_item_versions=2)
    for n in range(6, 9):
        CatalogueLog(layout.catalogue_db).append_upserts(f"e{n}", [_upsert(5000 + n)])
        sync_current(layout, keep_versions=2, keep_item_versions=2)
    kept = VersionStore(layout).list_versions()
    kinds = [v.kind for v in kept]
    # CURRENT's three deltas and the compacted version they need, plus the nightly; the
    # old chain went once nothing kept needed it.
    assert kinds == ["delta"] * 3 + ["items", "nightly"], kinds
    Recaller.load(VersionStore(layout))


def _upsert(item_id: int):  # type: ignore[no-untyped-def]
    from core.items_validation import validate_upserts
    from tests.core.items.conftest import CONTENT_DIM

    return validate_upserts([item(item_id)], CONTENT_DIM, 10).upserts[0]


def test_a_chain_at_the_limit_asks_for_a_compaction(make_store: MakeStore) -> None:
    store = make_store("Flat")
    assert (
        compaction_request(store.layout.root, "s3://b/p", max_chain=1) is None
    )  # complete CURRENT
    create(store.layout, "e1", [item(1001)])
    assert compaction_request(store.layout.root, None, max_chain=2) is None
    create(store.layout, "e2", [item(1002)])
    request = compaction_request(store.layout.root, "s3://b/p", max_chain=2)
    assert request is not None and request.event == "towerflow.chain.long"
    current = store.current()
    assert request.payload == {
        "root": "s3://b/p",
        "version_id": current,
        "depth": 2,
        "min_depth": 2,
    }
    assert request.resource["prefect.resource.id"] == f"towerflow.store.{current}"
    again = compaction_request(store.layout.root, "s3://b/p", max_chain=2)
    assert again is not None and again.id == request.id  # one event per CURRENT


@pytest.mark.parametrize("chain", [0, 2])
def test_compaction_publishes_entries_acknowledged_but_not_yet_published(
    make_store: MakeStore, chain: int
) -> None:
    """An event that died after its acknowledgement left entries no version includes: a
    compaction is a publish after that acknowledgement, so it includes them (with or
    without a chain to fold), as one delta on top of what it publishes."""
    store = make_store("Flat")
    for n in range(chain):
        create(store.layout, f"e{n}", [item(1100 + n)])
    CatalogueLog(store.layout.catalogue_db).append_upserts("died", [_upsert(4242)])
    result = compact_current(store.layout)
    assert result.compacted == (chain > 0) and result.folded == chain
    current = store.open_current()
    assert current.manifest.extra["delta"]["depth"] == 1  # on the fold, or on CURRENT
    assert current.manifest.lineage.applied_events == ("died",)
    assert current.manifest.lineage.catalogue_seq == CatalogueLog(store.layout.catalogue_db).head()
    recaller = Recaller.load(store)
    assert {4242, *(1100 + n for n in range(chain))} <= set(recaller.tables.item_id.tolist())
    assert recaller.n_items == N_ITEMS + chain + 1
    if chain:  # the fold serves what the head it folded served
        assert same_items_as(resolve_chain(store, current).base) is not None
    before = store.current()
    assert not compact_current(store.layout, min_depth=2).compacted  # a shallow chain
    assert store.current() == before


def test_apply_rows_equals_a_sort_of_the_merged_rows() -> None:
    from core.deltas import apply_rows

    rng = np.random.default_rng(0)
    for _ in range(50):
        ids = np.unique(rng.integers(0, 500, 200))
        col = rng.normal(size=(len(ids), 3)).astype(np.float32)
        delta = np.unique(rng.integers(0, 600, int(rng.integers(0, 20))))
        dcol = rng.normal(size=(len(delta), 3)).astype(np.float32)
        retired = np.setdiff1d(np.unique(rng.integers(0, 600, 10)), delta)
        got_ids, (got,) = apply_rows(ids, [col], delta, [dcol], retired)
        keep = ~np.isin(ids, np.union1d(delta, retired))
        want_ids = np.concatenate([ids[keep], delta])
        order = np.argsort(want_ids, kind="stable")
        assert got_ids.tolist() == want_ids[order].tolist()
        np.testing.assert_array_equal(got, np.concatenate([col[keep], dcol])[order])


def test_events_recorded_together_are_published_as_one_delta(make_store: MakeStore) -> None:
    """Events acknowledged while another publish held the lock go out in one delta, and
    each keeps its own outcome (accepted, duplicate) from its record step."""
    from core.items import record_items
    from core.items_validation import ItemsBatch

    store = make_store("Flat")
    root = str(store.layout.root)
    outcomes = [
        record_items(root, ItemsBatch(event_id="a", items=[item(3001), item(3002)])),
        record_items(root, ItemsBatch(event_id="b", items=[item(3003)])),
        record_items(root, ItemsBatch(event_id="a", items=[item(3001), item(3002)])),
    ]
    assert [(o.accepted, o.duplicate) for o in outcomes] == [(2, False), (1, False), (0, True)]
    result = sync_current(store.layout)
    head = store.open_current()
    assert result.published and head.manifest.lineage.applied_events == ("a", "b")
    assert head.manifest.extra["delta"]["upserted"] == 3 and chain_depth(store) == 1
    assert not sync_current(store.layout).published  # the other events' publishes: no-ops


def test_a_compaction_requested_for_a_long_chain_skips_one_already_shortened(
    make_store: MakeStore,
) -> None:
    store = make_store("Flat")
    _events(store)  # five deltas
    before = store.current()
    assert not compact_current(store.layout, min_depth=6).compacted
    assert store.current() == before
    assert compact_current(store.layout, min_depth=5).compacted


def test_an_overlay_that_does_not_fit_its_version_is_refused(make_store: MakeStore) -> None:
    """The fresh vectors must be of served items, not retired ones, finite and of the
    index's dimension: anything else is refused before it serves."""
    store = make_store("HNSW16")
    create(store.layout, "e1", [item(20, seed=9)])
    retire(store.layout, "r1", [30])
    good = Recaller.load(store)
    fresh = good.overlay
    assert fresh.fresh_ids.tolist() == [20] and fresh.tombstones.tolist() == [30]
    bad = {
        "does not serve": replace(fresh, fresh_ids=np.array([25], np.int64)),
        "both fresh and retired": replace(fresh, fresh_ids=np.array([30], np.int64)),
        "not finite": replace(fresh, fresh_vectors=fresh.fresh_vectors * np.nan),
        "of shape (1, 3)": replace(fresh, fresh_vectors=fresh.fresh_vectors[:, :3]),
    }
    for words, overlay in bad.items():
        with pytest.raises(VersionRejectedError, match=re.escape(words)):
            replace(good, overlay=overlay).check()

"""The service applies item deltas to its live index in place (core.recall_advance): the
same index object, the same answers as loading the version whole, no request ever sees
half a delta under concurrent load, a damaged delta is rejected while the old version
keeps serving, an update on HNSW goes through the overlay's fresh vectors, and what
cannot be applied in place (a new base, a compaction that rebuilt an outgrown overlay) is
loaded whole."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core.compaction import compact_current
from core.items_validation import validate_upserts
from core.recall import Recaller
from model import incremental
from service import RecallService
from storage import CatalogueLog, VersionFiles
from tests.core.items.conftest import CONTENT_DIM, N_ITEMS, item, publish_mini_version
from tests.core.items.helpers import create, held_ids, retire, top1_for_own_vector


def _service(root: Path, factory: str = "Flat") -> RecallService:
    service = RecallService(publish_mini_version(root, factory), poll_interval_s=3600)
    assert service.refresh()
    return service


def index_ids_of(recaller: Recaller) -> list[int]:
    return held_ids(recaller).tolist()


def _same_answers(a: Recaller, b: Recaller) -> None:
    assert a.tables.item_id.tolist() == b.tables.item_id.tolist()
    assert a.tables.category.tolist() == b.tables.category.tolist()
    assert np.setdiff1d(held_ids(a), a.tombstones).tolist() == a.tables.item_id.tolist()
    for user in range(1, 11):
        assert [r.item_id for r in a.recommend(user, k=10)] == [
            r.item_id for r in b.recommend(user, k=10)
        ]


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_deltas_are_applied_to_the_live_index_in_place(tmp_path: Path, factory: str) -> None:
    service = _service(tmp_path / "s", factory)
    store = service.store
    index = service.recaller.index  # type: ignore[union-attr]
    create(store.layout, "e1", [item(1001), item(1002)])
    assert service.refresh()
    retire(store.layout, "r1", [20, 1002])
    create(store.layout, "e2", [item(1003)])  # two deltas between polls
    assert service.refresh()
    served = service.recaller
    assert served is not None and served.version_id == store.current()
    assert served.index is index  # edited, not reloaded
    assert service.status.deltas_applied == 3 and service.status.swaps == 3
    assert served.n_items == N_ITEMS + 3 - 2
    if factory == "HNSW16":
        assert served.tombstones.tolist() == [20, 1002]
    _same_answers(served, Recaller.load(store))


def _user_vector(recaller: Recaller, user: int) -> np.ndarray:
    id_row, profile, history, _ = recaller._user_inputs(user, None)
    with torch.inference_mode():
        return recaller.model.forward_user(id_row, profile, history).numpy()[0]


def test_an_update_on_hnsw_is_applied_in_place_through_a_fresh_vector(tmp_path: Path) -> None:
    """HNSW cannot replace a vector: the updated items' old vectors are blocked and their
    new ones searched beside the index, so every item is found once, scored by its
    current vector, without a rebuild or a reload."""
    service = _service(tmp_path / "s", "HNSW16")
    store = service.store
    index = service.recaller.index  # type: ignore[union-attr]
    create(store.layout, "e1", [item(20, seed=9), item(40, seed=10), item(1001)])
    assert service.refresh() and service.recaller is not None
    served = service.recaller
    assert served.index is index and service.status.deltas_applied == 1
    assert served.overlay.fresh_ids.tolist() == [20, 40] and index.ntotal == N_ITEMS + 1
    for item_id in (20, 40, 1001):
        assert top1_for_own_vector(store, served, item_id) == item_id
    fresh = dict(zip(served.overlay.fresh_ids.tolist(), served.overlay.fresh_vectors, strict=True))
    for user in range(1, 6):
        got = served.recall(user, k=served.n_items, exclude_seen=False)
        ids = got.item_ids.tolist()
        # HNSW finds most, not all, of a catalogue-wide top-k; the fresh scan is exact.
        assert len(ids) == len(set(ids)) and set(fresh) <= set(ids)
        vec = _user_vector(served, user)
        for item_id, want in fresh.items():
            score = got.scores[ids.index(item_id)]
            assert score == pytest.approx(float(vec @ want), abs=1e-5)
    _same_answers(served, Recaller.load(store))
    publish_mini_version(store.layout.root, "HNSW16", seed=1)  # a nightly: a new base
    assert service.refresh() and service.recaller.version_id == store.current()
    assert service.recaller.index is not index and service.recaller.overlay.blocked == 0


def test_an_outgrown_overlay_is_rebuilt_by_compaction_and_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(incremental, "FRESH_MAX", 1)
    service = _service(tmp_path / "s", "HNSW16")
    store = service.store
    index = service.recaller.index  # type: ignore[union-attr]
    create(store.layout, "e1", [item(20, seed=9), item(40, seed=10)])
    retire(store.layout, "r1", [30])
    assert service.refresh() and service.recaller is not None
    assert service.recaller.index is index and service.recaller.overlay.blocked == 3
    compact_current(store.layout)
    folded = store.open_current()
    assert not (folded.path / VersionFiles.FRESH).exists()
    assert not (folded.path / VersionFiles.TOMBSTONES).exists()
    assert service.refresh() and service.recaller.version_id == folded.version_id
    assert service.recaller.index is not index and service.recaller.overlay.blocked == 0
    assert index_ids_of(service.recaller) == service.recaller.tables.item_id.tolist()
    _same_answers(service.recaller, Recaller.load(store))


def test_a_compaction_carries_the_overlay_and_the_service_takes_it_over(tmp_path: Path) -> None:
    service = _service(tmp_path / "s", "HNSW16")
    store = service.store
    index = service.recaller.index  # type: ignore[union-attr]
    create(store.layout, "e1", [item(20, seed=9)])
    retire(store.layout, "r1", [30])
    assert service.refresh()
    compact_current(store.layout)
    folded = store.open_current(verify=True)
    assert (folded.path / VersionFiles.FRESH).is_file()
    loaded = Recaller.load(store)
    assert loaded.overlay.fresh_ids.tolist() == [20] and loaded.tombstones.tolist() == [30]
    assert service.refresh() and service.recaller is not None
    assert service.recaller.index is index
    _same_answers(service.recaller, loaded)


@pytest.mark.parametrize("factory", ["Flat", "HNSW16"])
def test_a_compaction_of_the_served_chain_is_taken_over_without_a_reload(
    tmp_path: Path, factory: str
) -> None:
    service = _service(tmp_path / "s", factory)
    store = service.store
    index = service.recaller.index  # type: ignore[union-attr]
    create(store.layout, "e1", [item(1001)])
    retire(store.layout, "r1", [30])
    assert service.refresh()
    compact_current(store.layout)  # exactly what is served
    assert service.refresh() and service.recaller is not None
    assert service.recaller.version_id == store.current()
    assert service.recaller.index is index and service.status.swaps == 3
    _same_answers(service.recaller, Recaller.load(store))
    # Deltas published after the served head and then compacted: applied, then taken over.
    create(store.layout, "e2", [item(1002)])
    create(store.layout, "e3", [item(1003)])
    compact_current(store.layout)
    assert service.refresh() and service.recaller.version_id == store.current()
    assert service.recaller.index is index and service.status.deltas_applied == 4
    _same_answers(service.recaller, Recaller.load(store))
    # And deltas on top of the compaction stack on the taken-over version.
    create(store.layout, "e4", [item(1004)])
    assert service.refresh() and service.recaller.index is index
    assert 1004 in service.recaller.tables.item_id
    _same_answers(service.recaller, Recaller.load(store))


def test_a_compaction_with_unpublished_entries_on_top_is_applied_in_place(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path / "s")
    store = service.store
    index = service.recaller.index  # type: ignore[union-attr]
    create(store.layout, "e1", [item(1001)])
    assert service.refresh()
    # Acknowledged, never published (its event died): published on top of the fold.
    valid = validate_upserts([item(1002)], CONTENT_DIM, 10)
    CatalogueLog(store.layout.catalogue_db).append_upserts("died", valid.upserts)
    compact_current(store.layout)
    assert service.refresh() and service.recaller is not None
    assert service.recaller.index is index and 1002 in service.recaller.tables.item_id
    _same_answers(service.recaller, Recaller.load(store))


def test_a_damaged_delta_is_rejected_and_the_old_version_keeps_serving(tmp_path: Path) -> None:
    service = _service(tmp_path / "s")
    store = service.store
    before = service.recaller
    assert before is not None
    create(store.layout, "e1", [item(1001)])
    bad = store.current()
    assert bad is not None
    path = store.layout.version_dir(bad) / VersionFiles.DELTA_EMBEDDINGS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    assert not service.refresh()
    assert service.recaller is before and service.status.rejected[-1].version_id == bad
    assert "delta_embeddings.parquet" in service.status.rejected[-1].reason
    assert held_ids(before).tolist() == held_ids(Recaller.load(store, before.version_id)).tolist()


def test_no_request_sees_half_a_delta(tmp_path: Path) -> None:
    """Searches run on four threads while deltas that each retire one item and create
    another are applied in place: every answer comes from one version and holds only
    items that version serves."""
    service = _service(tmp_path / "s")
    store = service.store
    served: dict[str, set[int]] = {}
    recaller = service.recaller
    assert recaller is not None
    served[recaller.version_id] = set(recaller.tables.item_id.tolist())
    stop, problems, answers = threading.Event(), [], [0]

    def search(user: int) -> None:
        while not stop.is_set():
            with service.reading() as r:
                assert r is not None
                got = r.recall(user, k=N_ITEMS, exclude_seen=False)
                version, ids = r.version_id, got.item_ids.tolist()
            answers[0] += 1
            allowed = served.get(version)
            if allowed is not None and not set(ids) <= allowed:
                problems.append((version, sorted(set(ids) - allowed)))
            if len(ids) != len(set(ids)):
                problems.append((version, "duplicates"))

    threads = [threading.Thread(target=search, args=(u,)) for u in range(1, 5)]
    for t in threads:
        t.start()
    try:
        for n in range(12):
            retire(store.layout, f"r{n}", [10 * (n + 1)])
            create(store.layout, f"c{n}", [item(2000 + n)])
            assert service.refresh()
            r = service.recaller
            assert r is not None
            served[r.version_id] = set(r.tables.item_id.tolist())
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert service.status.deltas_applied == 24 and answers[0] > 24
    assert not problems, problems[:5]
    _same_answers(service.recaller, Recaller.load(store))  # type: ignore[arg-type]


@pytest.mark.parametrize("lagging", [False, True], ids=["up-to-date", "lagging"])
def test_deltas_rebased_by_a_compaction_are_taken_over_without_a_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lagging: bool
) -> None:
    """A compaction registers its fold and publishes the deltas that arrived meanwhile
    again on it (core.rebase): a service of the old chain's head, or of an older delta
    of it (lagging), takes the new chain over in place at the version that repeats what
    it serves, after retention removed the old deltas."""
    import core.compaction as compaction

    service = _service(tmp_path / "s")
    store = service.store
    index = service.recaller.index  # type: ignore[union-attr]
    create(store.layout, "e1", [item(1001)])
    real_fold = compaction.fold_deltas

    def fold_then_publish(folder, deltas, recipe):  # type: ignore[no-untyped-def]
        real_fold(folder, deltas, recipe)
        create(store.layout, "late1", [item(1002)])
        if lagging:
            assert service.refresh()  # the service follows the old chain to late1 only
        create(store.layout, "late2", [item(1003)])
        if not lagging:
            assert service.refresh()

    monkeypatch.setattr(compaction, "fold_deltas", fold_then_publish)
    compact_current(store.layout)
    head = store.open_current()
    assert "rebased" in head.manifest.extra
    served_before = service.recaller.version_id  # type: ignore[union-attr]
    assert served_before not in {v.version_id for v in store.list_versions()}  # pruned
    assert service.refresh() and service.recaller is not None
    assert service.recaller.version_id == head.version_id and service.recaller.index is index
    _same_answers(service.recaller, Recaller.load(store))
    create(store.layout, "e4", [item(1004)])  # later deltas apply in place on the new chain
    assert service.refresh() and service.recaller.index is index
    _same_answers(service.recaller, Recaller.load(store))

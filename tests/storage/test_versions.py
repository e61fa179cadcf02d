"""The publish protocol: publish, open, list, rollback, prune, gc, CAS conflicts and
corruption detection, against a real store in `tmp_path`."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest
import torch

from storage import (
    ITEM_EMBEDDINGS,
    PUBLISH_STEPS,
    REQUIRED_FILES,
    CorruptVersionError,
    Layout,
    Lineage,
    NoCurrentVersionError,
    PublishConflictError,
    VersionFiles,
    VersionNotFoundError,
    VersionStore,
    arrow_to_vectors,
    load_index,
    load_model,
    read_table,
    save_index,
    save_model,
    sha256_file,
    vectors_to_arrow,
    write_table,
)
from tests.storage.conftest import BACKENDS, backend_layout
from tests.storage.publisher import publish_staged, stage_version


@pytest.fixture(params=BACKENDS)
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    """Every test here runs on both registries: SQLite in the root, and PostgreSQL."""
    return backend_layout(request, tmp_path / "store")


def _publish(store: VersionStore, seed: int = 0) -> str:
    vid = stage_version(store, seed=seed)
    publish_staged(store, vid, store.current())
    return vid


def _dirs(path: Path) -> set[str]:
    """Folder names in `path` (staging owner markers are files beside their folders)."""
    return {p.name for p in path.iterdir() if p.is_dir()} if path.is_dir() else set()


def test_empty_store(store: VersionStore) -> None:
    assert store.current() is None and store.list_versions() == []
    with pytest.raises(NoCurrentVersionError, match="nothing published"):
        store.open_current()
    # Reading an empty store creates nothing (a shared store's root holds its binding).
    root = store.layout.root
    assert not root.exists() or [p.name for p in root.iterdir()] == ["database.json"]


def test_real_artifacts_publish_and_load(store: VersionStore) -> None:
    vid = store.new_version_id()
    staging = store.begin(vid)
    assert store.staging_path(vid) == staging
    model = torch.nn.Linear(4, 2)
    save_model(staging, model.state_dict(), {"in": 4, "out": 2})
    emb = np.random.default_rng(0).standard_normal((5, 4), dtype=np.float32)
    ids = np.array([3, 90, 7, 2**33, 41], dtype=np.int64)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(4))
    index.add_with_ids(emb, ids)
    save_index(staging / VersionFiles.INDEX, index)
    table = pa.table({"item_id": ids, "embedding": vectors_to_arrow(emb)})
    write_table(staging / VersionFiles.ITEM_EMBEDDINGS, table, ITEM_EMBEDDINGS)

    manifest = store.publish(
        vid,
        expected_current=None,
        config={"dim": 4},
        lineage=Lineage(data_snapshot="snap-a", parent_version=None),
        embedding_dim=4,
        metric="inner_product",
        item_count=5,
    )
    assert set(manifest.files) == REQUIRED_FILES
    handle = store.open_current()
    assert handle.version_id == vid and handle.path == store.layout.version_dir(vid)
    for name in REQUIRED_FILES:
        assert manifest.files[name].sha256 == sha256_file(handle.file(name))
    state, _ = load_model(handle.path)
    assert torch.equal(state["weight"], model.weight.detach())
    _, found = load_index(handle.file(VersionFiles.INDEX)).search(emb[:1], 1)
    assert found[0, 0] == 3
    back = read_table(
        handle.file(VersionFiles.ITEM_EMBEDDINGS), ITEM_EMBEDDINGS, dims={"embedding": 4}
    )
    assert np.array_equal(arrow_to_vectors(back.column("embedding")), emb)
    assert not _dirs(store.layout.staging_versions_dir)  # staging consumed by the rename
    with pytest.raises(KeyError, match=r"no file 'metrics\.json'"):
        handle.file(VersionFiles.METRICS)


def test_version_ids_sort_by_time_and_are_unique() -> None:
    ids = [VersionStore.new_version_id() for _ in range(50)]
    assert len(set(ids)) == 50
    earlier = VersionStore.new_version_id()
    time.sleep(0.002)
    assert VersionStore.new_version_id() > earlier
    assert all(re.fullmatch(r"v\d{8}T\d{9}Z-[0-9a-f]{6}", v) for v in ids)


def test_publish_requires_staged_files(store: VersionStore) -> None:
    with pytest.raises(FileNotFoundError, match="call begin"):
        store.staging_path("v-nope")
    vid = store.begin("v-partial").name
    with pytest.raises(FileExistsError, match="already being staged"):
        store.begin("v-partial")
    (store.staging_path(vid) / VersionFiles.MODEL_WEIGHTS).write_bytes(b"w")
    with pytest.raises(
        FileNotFoundError, match=r"lacks \['index.faiss', 'item_embeddings.parquet', 'model.json'\]"
    ):
        publish_staged(store, vid, None)
    (store.staging_path(vid) / ".index.faiss.tmp-1-ab").write_bytes(b"")
    with pytest.raises(RuntimeError, match="unfinished write"):
        store.publish(
            vid,
            expected_current=None,
            config={},
            lineage=Lineage(data_snapshot=None, parent_version=None),
            embedding_dim=1,
            metric="l2",
            item_count=0,
            required_files=(),
        )
    assert store.current() is None


def test_publish_list_and_lineage(store: VersionStore) -> None:
    steps: list[str] = []
    v1 = stage_version(store, seed=1)
    publish_staged(store, v1, None, hook=steps.append)
    assert tuple(steps) == PUBLISH_STEPS
    v2 = _publish(store, seed=2)
    infos = store.list_versions()
    assert [i.version_id for i in infos] == [v2, v1]
    assert [i.is_current for i in infos] == [True, False]
    assert infos[0].parent == v1 and infos[1].parent is None
    assert infos[0].data_snapshot == "snap-1" and infos[0].item_count == 16
    assert infos[0].metrics == {"recall@10": 0.5}
    assert store.open_version(v1).manifest.lineage.parent_version is None
    with pytest.raises(VersionNotFoundError, match=f"registered: \\['{v2}', '{v1}'\\]"):
        store.open_version("v-unknown")


def test_open_current_resolves_once(store: VersionStore) -> None:
    v1 = _publish(store, seed=1)
    handle = store.open_current()
    v2 = _publish(store, seed=2)
    assert store.current() == v2
    assert handle.version_id == v1 and handle.file(VersionFiles.INDEX).is_file()


def test_cas_conflict_first_wins_loser_cleaned_up(store: VersionStore) -> None:
    v1 = _publish(store)
    a = stage_version(store, seed=10)
    b = stage_version(store, seed=11)
    publish_staged(store, a, v1)
    with pytest.raises(
        PublishConflictError, match=f"expected CURRENT to be '{v1}' but it is '{a}'"
    ) as err:
        publish_staged(store, b, v1)
    assert (err.value.expected, err.value.actual, err.value.new) == (v1, a, b)
    assert store.current() == a
    assert not store.layout.version_dir(b).exists()
    assert [i.version_id for i in store.list_versions()] == [a, v1]


def test_concurrent_publishers_exactly_one_wins(layout: Layout) -> None:
    v1 = _publish(VersionStore(layout))
    stores = [VersionStore(layout) for _ in range(4)]
    staged = [stage_version(s, seed=20 + i) for i, s in enumerate(stores)]
    barrier = threading.Barrier(len(stores))
    outcomes: dict[str, str] = {}

    def run(s: VersionStore, vid: str) -> None:
        barrier.wait()
        try:
            publish_staged(s, vid, v1)
            outcomes[vid] = "won"
        except PublishConflictError:
            outcomes[vid] = "lost"

    threads = [threading.Thread(target=run, args=a) for a in zip(stores, staged, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, o in outcomes.items() if o == "won"]
    assert len(winners) == 1 and len(outcomes) == 4
    assert VersionStore(layout).current() == winners[0]
    assert _dirs(layout.versions_dir) == {v1, winners[0]}


def test_corruption_is_detected_and_blocks_rollback(store: VersionStore) -> None:
    v1 = _publish(store, seed=1)
    v2 = _publish(store, seed=2)
    index = store.layout.version_dir(v1) / VersionFiles.INDEX
    data = bytearray(index.read_bytes())
    data[100] ^= 0xFF  # same size, different content
    index.write_bytes(bytes(data))
    with pytest.raises(CorruptVersionError, match=r"'index\.faiss'.*has sha256") as err:
        store.verify(v1)
    assert err.value.version_id == v1 and err.value.file == VersionFiles.INDEX
    with pytest.raises(CorruptVersionError):
        store.rollback(v1)
    with pytest.raises(CorruptVersionError):
        store.open_version(v1)
    assert store.open_version(v1, verify=False).version_id == v1
    assert store.current() == v2

    (store.layout.version_dir(v2) / VersionFiles.MODEL_CONFIG).unlink()
    with pytest.raises(CorruptVersionError, match=r"'model\.json': missing"):
        store.open_current()


def test_rollback_moves_current_with_cas_and_audit(store: VersionStore) -> None:
    v1 = _publish(store, seed=1)
    v2 = _publish(store, seed=2)
    with pytest.raises(
        VersionNotFoundError, match=f"cannot roll back.*registered: \\['{v2}', '{v1}'\\]"
    ):
        store.rollback("v-missing")
    with pytest.raises(PublishConflictError):
        store.rollback(v1, expected_current=v1)  # stale view of CURRENT
    store.rollback(v1, expected_current=v2)
    assert store.current() == v1 and store.open_current().version_id == v1
    store.rollback(v2)
    events = [(e.action, e.from_version, e.to_version) for e in store.registry.events()]
    assert events == [
        ("publish", None, v1),
        ("publish", v1, v2),
        ("rollback", v2, v1),
        ("rollback", v1, v2),
    ]


def test_prune_keeps_newest_and_never_current(layout: Layout) -> None:
    store = VersionStore(layout, keep_versions=3)
    v1, v2, v3 = (_publish(store, seed=s) for s in range(3))
    strict = VersionStore(layout, keep_versions=1)
    strict.rollback(v1)
    assert strict.prune() == [v2]  # keeps newest (v3) and CURRENT (v1)
    assert _dirs(layout.versions_dir) == {v1, v3}
    v4 = _publish(strict, seed=4)
    assert [i.version_id for i in strict.list_versions()] == [v4]
    assert _dirs(layout.versions_dir) == {v4}
    pruned = [e.from_version for e in strict.registry.events() if e.action == "prune"]
    assert pruned == [v2, v3, v1]


def test_gc_removes_only_old_orphans(store: VersionStore) -> None:
    v1 = _publish(store)
    layout = store.layout
    orphan = layout.version_dir("v-orphan")
    orphan.mkdir()
    (orphan / "model.pt").write_bytes(b"x")
    abandoned = stage_version(store, seed=5)
    young = stage_version(store, seed=6)
    snap_staging = layout.staging_snapshot_dir("s", "0000")
    snap_staging.mkdir(parents=True)
    old = time.time() - 7200
    for d in (orphan, store.staging_path(abandoned), snap_staging, layout.version_dir(v1)):
        for p in [d, *d.iterdir()]:
            os.utime(p, (old, old))

    removed = store.gc()
    assert set(removed) == {orphan, store.layout.staging_version_dir(abandoned), snap_staging}
    assert _dirs(layout.versions_dir) == {v1}
    assert _dirs(layout.staging_versions_dir) == {young}
    store.verify(v1)


def test_registry_guards_against_prune_rollback_races(store: VersionStore) -> None:
    v1 = _publish(store, seed=1)
    v2 = _publish(store, seed=2)
    registry = store.registry
    assert not registry.unregister(v2)  # CURRENT is never unregistered
    assert registry.unregister(v1)
    with pytest.raises(VersionNotFoundError, match="not registered"):
        registry.compare_and_swap(v2, v1)  # a pruned version cannot become CURRENT
    assert registry.current() == v2

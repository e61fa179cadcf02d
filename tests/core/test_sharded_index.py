"""The index build in shards (``core.sharded_index``): train once, add item shards apart,
merge the inverted lists. The staged index.faiss is the unsplit step's byte for byte, the
summary's tuning is the same, damaged parts are refused, and an index that cannot be
merged (HNSW) is built whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.config import DataConfig, IndexConfig, NightlyConfig
from core.embedding import embed_version_items
from core.indexing import build_version_index, tuning_queries, tuning_truth
from core.lifecycle import begin_version
from core.refs import StageRef
from core.resume import train_step
from core.sharded_index import INDEX_STEP, index_shard, merge_index, plan_index, truth_shard
from core.snapshots import ensure_snapshot
from core.versionio import read_embeddings
from model.config import TrainConfig
from storage import CorruptVersionError, Layout, ShardFolder, VersionFiles, VersionStore

# IVF over the tiny world's 600 items: 16 lists (train sample 600 >= 16), tuned to 0.95.
IVF = IndexConfig(factory="IVF16,Flat", tune_queries=200)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> StageRef:
    root = str(tmp_path_factory.mktemp("sharded-index"))
    cfg = NightlyConfig(data=DataConfig(scale="tiny"), train=TrainConfig(epochs=1))
    snapshot = ensure_snapshot(root, cfg.data)
    stage = begin_version(root)
    train_step(snapshot, stage, cfg.data, cfg.tower, cfg.train, cfg.evaluation, resume=False)
    embed_version_items(stage, batch_size=256)
    return stage


def _index_file(stage: StageRef) -> Path:
    staging = VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    return staging / VersionFiles.INDEX


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,PQ8,RFlat", "Flat"])
def test_sharded_build_stages_the_unsplit_index(stage: StageRef, factory: str) -> None:
    cfg = IVF.model_copy(update={"factory": factory})
    whole = build_version_index(stage, cfg)
    expected = _sha(_index_file(stage))
    _index_file(stage).unlink()

    plan = plan_index(stage, cfg, shard_items=170, n_shards=3)
    assert plan.template is not None and [(s.lo, s.hi) for s in plan.spans] == [
        (0, 170), (170, 340), (340, 510), (510, 600),
    ]  # fmt: skip
    assert [(s.lo, s.hi) for s in plan.query_spans] == [(0, 67), (67, 134), (134, 200)]
    # Shards may finish in any order; the merge takes them in shard order.
    parts = [index_shard(stage, plan, s) for s in reversed(plan.spans)][::-1]
    truth = [truth_shard(stage, cfg, s) for s in reversed(plan.query_spans)][::-1]
    summary = merge_index(stage, cfg, plan, parts, truth)
    assert _sha(_index_file(stage)) == expected
    assert summary.n_items == whole.n_items == 600
    # The same index, so the same tuning: the same setting and the same measured recall.
    assert summary.params == whole.params and summary.recall == whole.recall
    assert not ShardFolder(Layout(Path(stage.root)), stage.version_id, INDEX_STEP).path.exists()


def test_a_damaged_or_missing_part_is_refused(stage: StageRef) -> None:
    plan = plan_index(stage, IVF, shard_items=300)
    parts = [index_shard(stage, plan, s) for s in plan.spans]
    folder = ShardFolder(Layout(Path(stage.root)), stage.version_id, INDEX_STEP)
    path = folder.path / parts[1].name
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    truth = [truth_shard(stage, IVF, s) for s in plan.query_spans]
    with pytest.raises(CorruptVersionError, match=r"part-00001.faiss.*does not match"):
        merge_index(stage, IVF, plan, parts, truth)
    with pytest.raises(ValueError, match=r"1 part\(s\) for 2 shard\(s\)"):
        merge_index(stage, IVF, plan, parts[:1], truth)
    # A new plan clears the earlier attempt's parts before any shard runs.
    plan_index(stage, IVF, shard_items=300)
    assert not path.exists()


def test_an_index_that_cannot_be_merged_is_built_whole(stage: StageRef) -> None:
    cfg = IndexConfig(factory="HNSW16", tune_queries=100)
    plan = plan_index(stage, cfg, shard_items=100)
    assert plan.template is None and plan.spans == []
    with pytest.raises(ValueError, match="has no shards"):
        index_shard(stage, plan, object())  # type: ignore[arg-type]
    summary = merge_index(stage, cfg, plan, [], [truth_shard(stage, cfg, plan.query_spans[0])])
    assert summary.n_items == 600 and summary.factory == "HNSW16"


def test_query_shards_give_the_one_process_ground_truth(stage: StageRef) -> None:
    """Tuning's ground truth by query shards, cut anywhere, is the one computed whole, and
    a damaged or missing ground-truth part is refused."""
    cfg = IVF.model_copy(update={"tune_queries": 150})
    ids, vectors = read_embeddings(
        VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    )
    whole = tuning_truth(vectors, ids, tuning_queries(stage, cfg), cfg)
    assert whole.shape == (150, 100) and (whole >= 0).all()
    plan = plan_index(stage, cfg, shard_items=600, n_shards=4)
    folder = ShardFolder(Layout(Path(stage.root)), stage.version_id, INDEX_STEP)
    truth = [truth_shard(stage, cfg, s) for s in plan.query_spans]
    assert [t.rows for t in truth] == [38, 38, 38, 36]
    parts = [index_shard(stage, plan, s) for s in plan.spans]
    with pytest.raises(ValueError, match=r"3 ground-truth part\(s\) for 4 query shard"):
        merge_index(stage, cfg, plan, parts, truth[:3])
    path = folder.path / truth[2].name
    saved = path.read_bytes()
    path.write_bytes(saved[:-7])
    with pytest.raises(CorruptVersionError, match=r"truth-00002.parquet"):
        merge_index(stage, cfg, plan, parts, truth)
    path.write_bytes(saved)
    summary = merge_index(stage, cfg, plan, parts, truth)
    assert summary.tune_queries == 150
    # The same ground truth as one process: the same recall as the unsplit step's.
    _index_file(stage).unlink()
    assert build_version_index(stage, cfg).recall == summary.recall

"""Embedding and evaluation in shards (``core.sharded``, ``core.sharded_eval``): the merged
result is bit-for-bit the unsplit step's, damaged or missing parts are refused by name, and
a kept result is reused instead of planned again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.config import DataConfig, EvalConfig, NightlyConfig
from core.embedding import embed_version_items, embedded_chunks
from core.evaluation import evaluate_version
from core.lifecycle import begin_version
from core.refs import SnapshotRef, StageRef
from core.resume import train_step
from core.sharded import embed_shard, merge_embeddings, plan_embedding, spans
from core.sharded_eval import evaluate_shard, merge_evaluation, plan_evaluation
from core.snapshots import ensure_snapshot
from core.versionio import load_served_model, read_embeddings, read_serving_tables
from model.config import TrainConfig
from model.embed import embed_items
from storage import (
    VERSION_ITEMS,
    CorruptVersionError,
    Layout,
    ShardFolder,
    TableWriter,
    VersionFiles,
    VersionStore,
    arrow_to_vectors,
    read_table,
)

DATA = DataConfig(scale="tiny")
# Score blocks of 64 users (not 1024), so the tiny world's 377 test users fill several
# blocks and shards; both paths read the setting.
EVAL = EvalConfig(score_block_users=64)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[SnapshotRef, StageRef]:
    root = str(tmp_path_factory.mktemp("sharded"))
    cfg = NightlyConfig(data=DATA, train=TrainConfig(epochs=1))
    snapshot = ensure_snapshot(root, cfg.data)
    stage = begin_version(root)
    train_step(snapshot, stage, cfg.data, cfg.tower, cfg.train, cfg.evaluation, resume=False)
    return snapshot, stage


def _staging(stage: StageRef) -> Path:
    return VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)


def test_spans_cover_the_rows_on_aligned_boundaries() -> None:
    cut = spans(10_000, 3000, 1024)  # 3000 rounds up to 3072
    assert [(s.lo, s.hi) for s in cut] == [(0, 3072), (3072, 6144), (6144, 9216), (9216, 10_000)]
    assert [s.index for s in cut] == [0, 1, 2, 3]
    assert spans(0, 10, 4) == []
    # No size: split in `count` shards, still on whole batches (5000 / 3 -> 1667 -> 1792).
    assert [(s.lo, s.hi) for s in spans(5000, None, 256, 3)] == [
        (0, 1792),
        (1792, 3584),
        (3584, 5000),
    ]
    with pytest.raises(ValueError, match="size >= 1"):
        spans(10, 0, 4)


def test_sharded_embedding_equals_the_unsplit_step(staged: tuple[SnapshotRef, StageRef]) -> None:
    _, stage = staged
    staging = _staging(stage)
    embed_version_items(stage, batch_size=64)
    ids, whole = read_embeddings(staging)
    (staging / VersionFiles.ITEM_EMBEDDINGS).unlink()

    plan = plan_embedding(stage, shard_items=150, batch_size=64, resume=False)
    assert len(plan.spans) > 2 and all(s.lo % 64 == 0 for s in plan.spans)
    parts = [embed_shard(stage, s, plan.batch_size) for s in reversed(plan.spans)][::-1]
    assert merge_embeddings(stage, plan, parts) == len(ids)
    got_ids, got = read_embeddings(staging)
    np.testing.assert_array_equal(got_ids, ids)
    assert got.tobytes() == whole.tobytes()  # bit for bit
    assert not ShardFolder(Layout(Path(stage.root)), stage.version_id, "embed-items").path.exists()


def test_streamed_chunks_are_one_pass_over_the_items_whatever_the_row_groups(
    staged: tuple[SnapshotRef, StageRef], tmp_path: Path
) -> None:
    """The item table is read in row groups and regrouped into whole tower batches: the
    vectors are bit for bit those of one pass, even when the file's row groups (here 100
    rows) fall across the batches (64)."""
    _, stage = staged
    staging = _staging(stage)
    model = load_served_model(staging)
    items = read_serving_tables(staging)
    categories = items.item_category_rows(model.spec.n_categories)
    one_pass = embed_items(
        model, items.item_id_row[64:], categories[64:], items.content[64:], batch_size=64
    )
    regrouped = tmp_path / "staging"
    shutil.copytree(staging, regrouped)
    table = read_table(staging / VersionFiles.ITEMS, VERSION_ITEMS)
    with TableWriter(regrouped / VersionFiles.ITEMS, VERSION_ITEMS) as writer:
        for lo in range(0, table.num_rows, 100):
            writer.write(table.slice(lo, 100))
    for folder in (staging, regrouped):
        chunks = list(embedded_chunks(folder, model, 64, 600, batch_size=64, chunk_batches=2))
        assert [c.num_rows for c in chunks] == [128, 128, 128, 128, 24]
        got = np.concatenate([arrow_to_vectors(c.column("embedding")) for c in chunks])
        assert got.tobytes() == one_pass.tobytes()
        ids = np.concatenate([c.column("item_id").to_numpy() for c in chunks])
        np.testing.assert_array_equal(ids, items.item_id[64:])


def test_a_damaged_or_missing_part_is_refused_by_name(
    staged: tuple[SnapshotRef, StageRef],
) -> None:
    _, stage = staged
    plan = plan_embedding(stage, shard_items=150, batch_size=64, resume=False)
    parts = [embed_shard(stage, s, plan.batch_size) for s in plan.spans]
    folder = ShardFolder(Layout(Path(stage.root)), stage.version_id, "embed-items")
    victim = folder.path / parts[1].name
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptVersionError, match=parts[1].name):
        merge_embeddings(stage, plan, parts)
    victim.unlink()
    with pytest.raises(CorruptVersionError, match="missing"):
        merge_embeddings(stage, plan, parts)
    with pytest.raises(ValueError, match="part"):
        merge_embeddings(stage, plan, parts[:1])
    # Intact parts in the wrong order do not cover the items, and leave no table behind.
    parts[1] = embed_shard(stage, plan.spans[1], plan.batch_size)
    (_staging(stage) / VersionFiles.ITEM_EMBEDDINGS).unlink(missing_ok=True)
    with pytest.raises(ValueError, match="do not cover the 600 staged items"):
        merge_embeddings(stage, plan, [parts[1], parts[0], *parts[2:]])
    assert not (_staging(stage) / VersionFiles.ITEM_EMBEDDINGS).exists()
    folder.remove()


def test_sharded_evaluation_equals_the_unsplit_step(staged: tuple[SnapshotRef, StageRef]) -> None:
    snapshot, stage = staged
    staging = _staging(stage)
    if not (staging / VersionFiles.ITEM_EMBEDDINGS).exists():
        embed_version_items(stage)
    whole = evaluate_version(snapshot, stage, DATA, EVAL)
    (staging / VersionFiles.METRICS).unlink()

    plan = plan_evaluation(snapshot, stage, DATA, EVAL, shard_users=100, resume=False)
    assert len(plan.spans) >= 2 and all(s.lo % 64 == 0 for s in plan.spans)
    assert plan.baseline is not None and plan.baseline.tuning == whole.baseline_tuning
    results = [evaluate_shard(snapshot, stage, DATA, EVAL, plan, s) for s in plan.spans]
    merged = merge_evaluation(snapshot, stage, DATA, EVAL, plan, results)
    assert merged == whole  # every figure exactly, cold start and gate included
    assert list(merged.rankers) == list(whole.rankers)


def test_a_kept_result_is_restored_instead_of_planned(
    staged: tuple[SnapshotRef, StageRef],
) -> None:
    snapshot, stage = staged
    # A second stage holding the same trained model and nothing else: embed and evaluate
    # it in shards (kept for a rerun), then plan both again.
    other = begin_version(stage.root)
    for f in _staging(stage).iterdir():
        if f.name not in (VersionFiles.ITEM_EMBEDDINGS, VersionFiles.METRICS):
            shutil.copy2(f, _staging(other) / f.name)
    first = plan_embedding(other, shard_items=10_000, batch_size=64)
    assert first.restored is None and first.key
    merge_embeddings(other, first, [embed_shard(other, s, 64) for s in first.spans])
    (_staging(other) / VersionFiles.ITEM_EMBEDDINGS).unlink()
    again = plan_embedding(other, shard_items=10_000, batch_size=64)
    assert again.restored == snapshot.n_items and again.spans == []
    assert (_staging(other) / VersionFiles.ITEM_EMBEDDINGS).exists()
    assert merge_embeddings(other, again, []) == snapshot.n_items

    plan = plan_evaluation(snapshot, other, DATA, EVAL, shard_users=10_000)
    results = [evaluate_shard(snapshot, other, DATA, EVAL, plan, s) for s in plan.spans]
    report = merge_evaluation(snapshot, other, DATA, EVAL, plan, results)
    (_staging(other) / VersionFiles.METRICS).unlink()
    replan = plan_evaluation(snapshot, other, DATA, EVAL, shard_users=10_000)
    assert replan.restored == report and replan.spans == []
    assert merge_evaluation(snapshot, other, DATA, EVAL, replan, []) == report
    assert (_staging(other) / VersionFiles.METRICS).exists()


def test_a_worker_that_cannot_see_the_staged_version_says_why(
    staged: tuple[SnapshotRef, StageRef], tmp_path: Path
) -> None:
    snapshot, stage = staged
    plan = plan_embedding(stage, shard_items=100, batch_size=64, resume=False)
    eval_plan = plan_evaluation(snapshot, stage, DATA, EVAL, shard_users=100, resume=False)
    # A worker on another machine: the same stage, but the root path is not there.
    elsewhere = stage.model_copy(update={"root": str(tmp_path / "not-mounted")})
    hint = "this worker runs on another machine.*TOWERFLOW_CACHE_DIR"
    with pytest.raises(FileNotFoundError, match=f"version {stage.version_id}: .*{hint}"):
        embed_shard(elsewhere, plan.spans[0], plan.batch_size)
    with pytest.raises(FileNotFoundError, match=hint):
        evaluate_shard(snapshot, elsewhere, DATA, EVAL, eval_plan, eval_plan.spans[0])
    assert not (tmp_path / "not-mounted").exists()  # nothing written where it is not seen

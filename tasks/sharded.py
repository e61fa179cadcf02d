"""Tasks of the split steps (``core.sharded``, ``core.sharded_eval``,
``core.sharded_index``): a plan and a merge that run in the flow's process, and shard
tasks that a distributed task runner maps over its workers. Shards hand back part
references, never data."""

from __future__ import annotations

from prefect import get_run_logger, task

from core.config import DataConfig, EvalConfig, IndexConfig
from core.evaluation import EvalReport
from core.refs import IndexSummary, SnapshotRef, StageRef
from core.sharded import (
    EmbedPlan,
    PartRef,
    Span,
    embed_shard,
    merge_embeddings,
    plan_embedding,
)
from core.sharded_data import (
    DataPlan,
    EventParts,
    generate_shard,
    merge_generation,
    plan_generation,
)
from core.sharded_eval import (
    EvalPlan,
    ShardResult,
    evaluate_shard,
    merge_evaluation,
    plan_evaluation,
)
from core.sharded_index import IndexPlan, index_shard, merge_index, plan_index, truth_shard
from core.threads import apply_threads
from tasks.retry import IO_RETRY

__all__ = [
    "embed_items_shard",
    "evaluate_users_shard",
    "generate_events_shard",
    "index_items_shard",
    "merge_embedded_items",
    "merge_evaluated_users",
    "merge_generated_events",
    "merge_index_parts",
    "plan_data",
    "plan_index_build",
    "plan_item_embedding",
    "plan_user_evaluation",
    "tuning_truth_shard",
]


@task(name="plan-prepare-data", **IO_RETRY)
def plan_data(root: str, cfg: DataConfig, shard_users: int | None, n_shards: int = 1) -> DataPlan:
    """``core.sharded_data.plan_generation``: the stored (or imported) snapshot, or the
    staged world of a new synthetic one and its user-block shards."""
    return plan_generation(root, cfg, shard_users, n_shards, logger=get_run_logger())


@task(name="prepare-data-shard", **IO_RETRY)
def generate_events_shard(cfg: DataConfig, plan: DataPlan, span: Span) -> EventParts:
    """``core.sharded_data.generate_shard``: numpy only (a Dask worker's nanny limits
    BLAS to one thread per worker)."""
    return generate_shard(cfg, plan, span)


@task(name="merge-prepare-data")
def merge_generated_events(cfg: DataConfig, plan: DataPlan, parts: list[EventParts]) -> SnapshotRef:
    """``core.sharded_data.merge_generation``: join the parts and commit the snapshot."""
    return merge_generation(cfg, plan, parts, logger=get_run_logger())


@task(name="plan-embed-items")
def plan_item_embedding(
    stage: StageRef,
    shard_items: int | None,
    batch_size: int = 8192,
    n_shards: int = 1,
    resume: bool = False,
) -> EmbedPlan:
    """``core.sharded.plan_embedding``: item shards, or a failed run's kept vectors."""
    return plan_embedding(
        stage, shard_items, batch_size, n_shards=n_shards, resume=resume, logger=get_run_logger()
    )


@task(name="embed-items-shard", **IO_RETRY)
def embed_items_shard(stage: StageRef, span: Span, batch_size: int, threads: int) -> PartRef:
    """``core.sharded.embed_shard`` with ``threads`` torch threads (sized for a worker)."""
    apply_threads(threads)
    return embed_shard(stage, span, batch_size)


@task(name="merge-embed-items")
def merge_embedded_items(stage: StageRef, plan: EmbedPlan, parts: list[PartRef]) -> int:
    """``core.sharded.merge_embeddings``: check and join the parts; returns the count."""
    return merge_embeddings(stage, plan, parts, logger=get_run_logger())


@task(name="plan-evaluate")
def plan_user_evaluation(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    shard_users: int | None,
    n_shards: int = 1,
    threads: int | None = None,
    resume: bool = False,
) -> EvalPlan:
    """``core.sharded_eval.plan_evaluation``: user shards and the baseline chosen on
    validation, or a failed run's kept report."""
    apply_threads(threads)
    return plan_evaluation(
        snapshot,
        stage,
        data_cfg,
        cfg,
        shard_users,
        n_shards=n_shards,
        resume=resume,
        logger=get_run_logger(),
    )


@task(name="evaluate-shard", **IO_RETRY)
def evaluate_users_shard(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    plan: EvalPlan,
    span: Span,
    threads: int,
) -> ShardResult:
    """``core.sharded_eval.evaluate_shard`` with ``threads`` torch threads."""
    apply_threads(threads)
    return evaluate_shard(snapshot, stage, data_cfg, cfg, plan, span)


@task(name="merge-evaluate")
def merge_evaluated_users(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    plan: EvalPlan,
    results: list[ShardResult],
    threads: int | None = None,
) -> EvalReport:
    """``core.sharded_eval.merge_evaluation``: the report from the shards' parts."""
    apply_threads(threads)
    return merge_evaluation(snapshot, stage, data_cfg, cfg, plan, results, logger=get_run_logger())


@task(name="plan-build-index")
def plan_index_build(
    stage: StageRef,
    cfg: IndexConfig,
    shard_items: int | None,
    n_shards: int = 1,
    threads: int | None = None,
) -> IndexPlan:
    """``core.sharded_index.plan_index``: the trained empty index and the item shards."""
    apply_threads(threads)
    return plan_index(stage, cfg, shard_items, n_shards, logger=get_run_logger())


@task(name="build-index-shard", **IO_RETRY)
def index_items_shard(stage: StageRef, plan: IndexPlan, span: Span, threads: int) -> PartRef:
    """``core.sharded_index.index_shard`` with ``threads`` Faiss threads."""
    apply_threads(threads)
    return index_shard(stage, plan, span)


@task(name="tune-index-shard", **IO_RETRY)
def tuning_truth_shard(stage: StageRef, cfg: IndexConfig, span: Span, threads: int) -> PartRef:
    """``core.sharded_index.truth_shard`` with ``threads`` Faiss threads."""
    apply_threads(threads)
    return truth_shard(stage, cfg, span)


@task(name="merge-build-index")
def merge_index_parts(
    stage: StageRef,
    cfg: IndexConfig,
    plan: IndexPlan,
    parts: list[PartRef],
    truth: list[PartRef],
    threads: int | None = None,
) -> IndexSummary:
    """``core.sharded_index.merge_index``: merge, tune and stage index.faiss; fail
    (discarding the version) below the recall target."""
    apply_threads(threads)
    return merge_index(stage, cfg, plan, parts, truth, logger=get_run_logger())

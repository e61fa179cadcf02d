"""Full-ranking evaluation split by test users: plan -> shards -> merge (see
``core.sharded``).

The plan picks the users (``core.evaluation.eval_users``) and tunes the classical baseline
on validation once; each shard ranks every item for its users with every ranker (model,
popularity, the baseline refitted as the plan chose, the oracle) and writes per-user
metric values as parts; the merge joins them in user order (``model.fullrank``), adds the
cold-start figures and the gate's verdict, and stages metrics.json. Shards start on
multiples of the scoring block, so the merged metrics are bit-for-bit those of
``core.evaluation.evaluate_version`` for the same threads.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from core.baseline_choice import BaselineChoice, choose_baseline
from core.config import DataConfig, EvalConfig
from core.dataio import load_prepared
from core.evaluation import (
    EvalReport,
    Ranked,
    block_users,
    eval_ks,
    eval_users,
    finish_report,
    model_vectors,
    reference_scorers,
    split_curve,
    train_popularity,
    vector_scorer,
)
from core.progress import StepLogger
from core.refs import SnapshotRef, StageRef
from core.resume import evaluate_key, keep_result, restore_kept
from core.sharded import Span, spans, staging_dir
from model.fullrank import RankingPart, merge_parts, part_keys, rank_part
from model.pipeline import Prepared
from storage import (
    ColumnSpec,
    Layout,
    PartRef,
    ShardFolder,
    TableSpec,
    snapshot_path,
    stage_listing,
)

__all__ = ["EvalPlan", "ShardResult", "evaluate_shard", "merge_evaluation", "plan_evaluation"]

log = logging.getLogger(__name__)

EVAL_STEP = "evaluate"

_COVERED = TableSpec(
    "eval_covered", (ColumnSpec("k", pa.int64()), ColumnSpec("item_row", pa.int64()))
)


class EvalPlan(BaseModel):
    """What evaluation will do: restore a kept report, or rank ``spans`` of the evaluated
    users (``core.evaluation.eval_users`` order) with the classical baseline ``baseline``
    (None: skipped); ``key`` is its resume key ('' = off)."""

    model_config = ConfigDict(frozen=True)

    key: str
    restored: EvalReport | None
    spans: list[Span]
    baseline: BaselineChoice | None


class ShardResult(BaseModel):
    """One shard's parts: per ranker, its per-user values and the items its lists show."""

    model_config = ConfigDict(frozen=True)

    values: dict[str, PartRef]
    covered: dict[str, PartRef]


def _values_spec(ks: tuple[int, ...]) -> TableSpec:
    # Shards always rank with item popularity (the catalogue metrics need it).
    names = part_keys(ks, with_popularity=True)
    return TableSpec("eval_values", tuple(ColumnSpec(n, pa.float64()) for n in names))


def _paths(snapshot: SnapshotRef, stage: StageRef) -> tuple[Path, Path, ShardFolder]:
    layout = Layout(Path(stage.root))
    staging = staging_dir(stage)  # first: on a worker that cannot see the root, say why
    return (
        snapshot_path(layout, snapshot.snapshot_id),
        staging,
        ShardFolder(layout, stage.version_id, EVAL_STEP),
    )


def plan_evaluation(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    shard_users: int | None,
    *,
    n_shards: int = 1,
    resume: bool = True,
    logger: StepLogger = log,
) -> EvalPlan:
    """Cut the evaluated users into shards of about ``shard_users`` (None: ``n_shards``
    shards) and choose the classical baseline on validation, or restore a failed run's
    report for the same inputs (``core.resume.evaluate_key``)."""
    key = evaluate_key(snapshot, stage, data_cfg, cfg) if resume else ""
    if resume:
        meta = restore_kept(stage, EVAL_STEP, key, logger)
        if meta is not None:
            report = EvalReport.model_validate(meta)
            return EvalPlan(key=key, restored=report, spans=[], baseline=None)
    folder, _, shards = _paths(snapshot, stage)
    shards.remove()  # parts of an earlier attempt are never merged
    prep = load_prepared(folder, data_cfg)
    users = eval_users(prep, cfg)
    cut = spans(len(users), shard_users, block_users(cfg, prep.data.n_items), n_shards)
    logger.info("evaluate: %d test users in %d shard(s)", len(users), len(cut))
    return EvalPlan(key=key, restored=None, spans=cut, baseline=choose_baseline(prep, cfg))


def _part_table(part: RankingPart, spec: TableSpec) -> pa.Table:
    return pa.table({c.name: part.values[c.name] for c in spec.columns})


def _covered_table(part: RankingPart) -> pa.Table:
    ks = [np.full(len(items), k, np.int64) for k, items in part.covered.items()]
    return pa.table(
        {"k": np.concatenate(ks), "item_row": np.concatenate(list(part.covered.values()))}
    )


def evaluate_shard(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    plan: EvalPlan,
    span: Span,
) -> ShardResult:
    """Rank every item for the plan's users ``[span.lo, span.hi)`` with every ranker and
    write each ranker's per-user values and shown items as parts."""
    folder, staging, shards = _paths(snapshot, stage)
    prep = load_prepared(folder, data_cfg)
    d = prep.data
    users = eval_users(prep, cfg)[span.lo : span.hi]
    scorers = {
        "model": vector_scorer(*model_vectors(prep, staging)),
        **reference_scorers(prep, folder, cfg, baseline=plan.baseline),
    }
    all_ks, _ = eval_ks(cfg, d.n_items)
    spec = _values_spec(all_ks)
    relevant, exclude = d.sets(prep.split.test), d.sets(~prep.split.test)
    popularity = train_popularity(prep).astype(np.float64)
    block = block_users(cfg, d.n_items)
    values: dict[str, PartRef] = {}
    covered: dict[str, PartRef] = {}
    for i, (name, fn) in enumerate(scorers.items()):
        part = rank_part(fn, users, d.n_items, relevant, exclude, all_ks, block, popularity)
        stem = f"part-{span.index:05d}-{i}"
        values[name] = shards.write(f"{stem}-values.parquet", _part_table(part, spec), spec)
        covered[name] = shards.write(f"{stem}-covered.parquet", _covered_table(part), _COVERED)
    return ShardResult(values=values, covered=covered)


def _read_part(
    shards: ShardFolder, result: ShardResult, name: str, spec: TableSpec, ks: tuple[int, ...]
) -> RankingPart:
    table = shards.read(result.values[name], spec)
    values = {c: table.column(c).to_numpy() for c in spec.column_names}
    shown = shards.read(result.covered[name], _COVERED)
    k, items = shown.column("k").to_numpy(), shown.column("item_row").to_numpy()
    return RankingPart(values, {kk: items[k == kk] for kk in ks})


def _merge_ranked(
    prep: Prepared, cfg: EvalConfig, shards: ShardFolder, results: list[ShardResult]
) -> Ranked:
    all_ks, curve_ks = eval_ks(cfg, prep.data.n_items)
    spec = _values_spec(all_ks)
    popularity = train_popularity(prep)
    rankers: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[int, float]] = {}
    n_users = 0
    for name in results[0].values:  # the shards' ranker order: model first
        parts = [_read_part(shards, r, name, spec, all_ks) for r in results]
        metrics = merge_parts(parts, prep.data.n_items, all_ks, popularity)
        n_users = int(metrics["n_users"])
        rankers[name], curves[name] = split_curve(metrics, cfg, curve_ks)
    return Ranked(n_users, rankers, curves)


def merge_evaluation(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    plan: EvalPlan,
    results: list[ShardResult],
    *,
    logger: StepLogger = log,
) -> EvalReport:
    """Check and join the shards' parts into the evaluation report (cold start and gate
    included), stage metrics.json and keep it for a rerun when the plan has a key."""
    if plan.restored is not None:
        return plan.restored
    if len(results) != len(plan.spans) or not results:
        raise ValueError(f"evaluate: {len(results)} result(s) for {len(plan.spans)} shard(s)")
    folder, staging, shards = _paths(snapshot, stage)
    before = stage_listing(staging)
    start = time.perf_counter()
    prep = load_prepared(folder, data_cfg)
    ranked = _merge_ranked(prep, cfg, shards, results)
    tuning = dict(plan.baseline.tuning) if plan.baseline is not None else {}
    report = finish_report(prep, staging, cfg, ranked, model_vectors(prep, staging), tuning, logger)
    shards.remove()
    logger.info(
        "evaluate: merged %d shard(s) of %d users in %.2f s",
        len(results),
        report.n_users,
        time.perf_counter() - start,
    )
    if plan.key:
        keep_result(stage, EVAL_STEP, plan.key, before, report.model_dump(mode="json"), logger)
    return report

"""Evaluation step and quality gate: full-ranking metrics of the staged model next to the
popularity baseline and (on synthetic data) the oracle that knows the true scores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from prefect import get_run_logger, task
from pydantic import BaseModel

from model.dataset import temporal_split
from model.embed import embed_users
from model.metrics import evaluate_ranking
from model.synthetic import oracle_scores
from storage import Layout, VersionFiles, VersionStore, snapshot_path, write_json
from tasks.config import DataConfig, EvalConfig
from tasks.dataio import (
    load_dataset,
    load_served_model,
    load_truth,
    read_embeddings,
    read_serving_tables,
)
from tasks.publish import discard_version
from tasks.refs import SnapshotRef, StageRef
from tasks.runtime import apply_threads

__all__ = ["EvalReport", "QualityGateError", "check_gate", "evaluate_model", "quality_gate"]

_SCORE_BLOCK_FLOATS = 1 << 24

Scorer = Callable[[npt.NDArray[np.int64]], torch.Tensor]


class QualityGateError(RuntimeError):
    """The model did not beat the baseline by the required margin; nothing was published."""


class EvalReport(BaseModel):
    """Metrics per ranker ('model', 'popularity', 'oracle' when known) on the test split."""

    n_users: int
    n_items: int
    rankers: dict[str, dict[str, float]]
    gate_metric: str
    gate_threshold: float
    gate_passed: bool


def check_gate(
    rankers: dict[str, dict[str, float]], metric: str, min_lift: float
) -> tuple[float, bool]:
    """Threshold = popularity's ``metric`` * (1 + min_lift); passed when the model reaches it."""
    for name in ("model", "popularity"):
        if metric not in rankers.get(name, {}):
            raise ValueError(f"gate metric {metric!r} missing for {name}: {sorted(rankers[name])}")
    threshold = rankers["popularity"][metric] * (1.0 + min_lift)
    return threshold, rankers["model"][metric] >= threshold


@task(name="evaluate")
def evaluate_model(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    threads: int | None = None,
) -> EvalReport:
    """Rank every item for test users with their train + validation items masked; stage
    metrics.json with the model, popularity and oracle figures."""
    logger = get_run_logger()
    apply_threads(threads)
    layout = Layout(Path(stage.root))
    folder = snapshot_path(layout, snapshot.snapshot_id)
    staging = VersionStore(layout).staging_path(stage.version_id)
    data = load_dataset(folder)
    split = temporal_split(data.inter_ts, data_cfg.val_frac, data_cfg.test_frac)
    relevant, exclude = data.sets(split.test), data.sets(~split.test)
    users = np.flatnonzero(relevant.lengths() > 0)
    if cfg.max_users is not None and len(users) > cfg.max_users:
        rng = np.random.default_rng(cfg.seed)
        users = np.sort(rng.choice(users, cfg.max_users, replace=False))

    model = load_served_model(staging)
    tables = read_serving_tables(staging)
    item_ids, item_vecs = read_embeddings(staging)
    if not np.array_equal(item_ids, data.item_id):
        raise ValueError(f"{staging}: item embeddings do not cover the snapshot's catalogue")
    user_vecs = torch.from_numpy(embed_users(model, tables.user_id_row, tables.profile))
    items_t = torch.from_numpy(item_vecs)
    popularity = torch.from_numpy(
        np.bincount(data.inter_item[split.train], minlength=data.n_items).astype(np.float32)
    )
    scorers: dict[str, Scorer] = {
        "model": lambda rows: user_vecs[torch.from_numpy(rows)] @ items_t.T,
        "popularity": lambda rows: popularity.expand(len(rows), -1).clone(),
    }
    truth = load_truth(folder, data)
    if truth is not None:
        scorers["oracle"] = lambda rows: torch.from_numpy(
            oracle_scores(
                truth.user_latent[rows],
                truth.item_latent,
                truth.log_popularity,
                truth.temperature,
            )
        )
    # Score blocks are (block, n_items) float32 with ~3 temporaries: ~256 MB per block.
    block = int(np.clip(_SCORE_BLOCK_FLOATS // data.n_items, 1, 1024))
    rankers = {
        name: evaluate_ranking(
            fn, users, data.n_items, relevant, exclude, ks=cfg.ks, block_users=block
        )
        for name, fn in scorers.items()
    }
    threshold, passed = check_gate(rankers, cfg.gate_metric, cfg.gate_min_lift)
    report = EvalReport(
        n_users=len(users),
        n_items=data.n_items,
        rankers=rankers,
        gate_metric=cfg.gate_metric,
        gate_threshold=threshold,
        gate_passed=passed,
    )
    write_json(staging / VersionFiles.METRICS, report.model_dump(mode="json"))
    for name, metrics in rankers.items():
        logger.info("%-10s %s", name, "  ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return report


@task(name="quality-gate")
def quality_gate(report: EvalReport, stage: StageRef) -> None:
    """Fail the run (and drop the staged version) unless the model beat the baseline."""
    model_value = report.rankers["model"][report.gate_metric]
    if report.gate_passed:
        get_run_logger().info(
            "quality gate passed: %s %.4f >= %.4f",
            report.gate_metric,
            model_value,
            report.gate_threshold,
        )
        return
    discard_version(stage)
    raise QualityGateError(
        f"quality gate failed: model {report.gate_metric} = {model_value:.4f} is below "
        f"{report.gate_threshold:.4f} (popularity "
        f"{report.rankers['popularity'][report.gate_metric]:.4f} plus the required lift); "
        f"version {stage.version_id} was not published and CURRENT is unchanged "
        f"({stage.parent})"
    )

"""Evaluation and the quality gate: full-ranking metrics of the staged model next to the
popularity baseline and (on synthetic data) the oracle that knows the true scores."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from pydantic import BaseModel

from core.baseline_choice import BaselineChoice, baseline_scorer, choose_baseline
from core.config import DataConfig, EvalConfig
from core.dataio import load_prepared, load_truth
from core.lifecycle import discard_version
from core.progress import StepLogger
from core.refs import SnapshotRef, StageRef
from core.versionio import load_served_model, read_embeddings
from model.cold_start import (
    NewItemScores,
    category_popularity,
    cold_start_items,
    cold_start_metrics,
    user_category_affinity,
)
from model.fast_rank import SharedScores, VectorScores
from model.fullrank import evaluate_ranking
from model.pipeline import (
    Prepared,
    ScoreFn,
    score_block_users,
    user_vectors,
)
from model.synthetic import oracle_vectors
from storage import Layout, VersionFiles, VersionStore, snapshot_path, write_json

__all__ = [
    "BaselineChoice",
    "EvalReport",
    "QualityGateError",
    "Ranked",
    "baseline_scorer",
    "block_users",
    "check_gate",
    "choose_baseline",
    "enforce_gate",
    "eval_ks",
    "eval_users",
    "evaluate_version",
    "finish_report",
    "model_vectors",
    "rank_all",
    "reference_scorers",
    "split_curve",
    "train_popularity",
    "vector_scorer",
]

log = logging.getLogger(__name__)

_LOGGED = ("recall", "ndcg", "mrr", "coverage")


class QualityGateError(RuntimeError):
    """The model did not beat the baseline by the required margin; nothing was published."""


class EvalReport(BaseModel):
    """Metrics per ranker ('model', 'popularity', the classical baseline ('ease' or
    'itemknn') and 'oracle' when known) on the test split."""

    n_users: int
    n_items: int
    protocol: str = "temporal"
    rankers: dict[str, dict[str, float]]
    gate_metric: str
    gate_threshold: float
    gate_passed: bool
    baseline_tuning: dict[str, float] = {}  # validation metric per baseline candidate
    # Items first seen at test time, ranked among themselves from content alone: n_items,
    # n_users and metrics of the model, random and category-popularity rankers.
    cold_start: dict[str, Any] | None = None
    # Recall@K per ranker at EvalConfig.curve_ks (the report's Recall@K-vs-K plot).
    recall_curve: dict[str, dict[int, float]] = {}


def check_gate(
    rankers: dict[str, dict[str, float]], metric: str, min_lift: float
) -> tuple[float, bool]:
    """Threshold = popularity's ``metric`` * (1 + min_lift); passed when the model reaches it."""
    for name in ("model", "popularity"):
        if metric not in rankers.get(name, {}):
            raise ValueError(f"gate metric {metric!r} missing for {name}: {sorted(rankers[name])}")
    threshold = rankers["popularity"][metric] * (1.0 + min_lift)
    return threshold, rankers["model"][metric] >= threshold


class Ranked(NamedTuple):
    """``rank_all``'s result: users evaluated, metrics per ranker at ``EvalConfig.ks`` and
    each ranker's Recall@K at ``EvalConfig.curve_ks`` (the report's curve)."""

    n_users: int
    rankers: dict[str, dict[str, float]]
    curves: dict[str, dict[int, float]]


def _at_k(key: str) -> int | None:
    return int(key.split("@")[1]) if "@" in key else None


def eval_users(prep: Prepared, cfg: EvalConfig) -> npt.NDArray[np.int64]:
    """`(n,) int64` sorted test users evaluated: every user with a test item, or a seeded
    sample of ``cfg.max_users`` of them."""
    d = prep.data
    users = np.flatnonzero(np.bincount(d.inter_user[prep.split.test], minlength=d.n_users) > 0)
    if cfg.max_users is not None and len(users) > cfg.max_users:
        rng = np.random.default_rng(cfg.seed)
        users = np.sort(rng.choice(users, cfg.max_users, replace=False))
    return users


def block_users(cfg: EvalConfig, n_items: int) -> int:
    """Users per full-ranking block: ``cfg.score_block_users``, else sized for the
    catalogue (``model.pipeline.score_block_users``)."""
    return cfg.score_block_users or score_block_users(n_items)


def eval_ks(cfg: EvalConfig, n_items: int) -> tuple[tuple[int, ...], list[int]]:
    """(every cut-off ranked: ``cfg.ks`` and the curve's, the curve's cut-offs that the
    catalogue is deep enough for)."""
    curve_ks = sorted({k for k in cfg.curve_ks if k <= n_items})
    return tuple(sorted(set(cfg.ks) | set(curve_ks))), curve_ks


def split_curve(
    metrics: dict[str, float], cfg: EvalConfig, curve_ks: list[int]
) -> tuple[dict[str, float], dict[int, float]]:
    """One ranker's metrics at every cut-off -> (those at ``cfg.ks`` and the catalogue
    metrics, its Recall@K at ``curve_ks``)."""
    kept = {k: v for k, v in metrics.items() if _at_k(k) in (None, *cfg.ks)}
    return kept, {k: metrics[f"recall@{k}"] for k in curve_ks}


def train_popularity(prep: Prepared) -> npt.NDArray[np.int64]:
    """`(n_items,)` training interactions per item (the catalogue metrics' popularity)."""
    return np.bincount(prep.data.inter_item[prep.split.train], minlength=prep.data.n_items)


def rank_all(prep: Prepared, scorers: dict[str, ScoreFn], cfg: EvalConfig) -> Ranked:
    """Full-ranking test metrics of every scorer over the same (sampled) test users, with
    each user's training and validation items masked. One ranking per scorer serves both
    the metrics at ``cfg.ks`` and the Recall@K curve."""
    d, split = prep.data, prep.split
    relevant, exclude = d.sets(split.test), d.sets(~split.test)
    users = eval_users(prep, cfg)
    popularity = train_popularity(prep)
    block = block_users(cfg, d.n_items)
    all_ks, curve_ks = eval_ks(cfg, d.n_items)
    rankers: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[int, float]] = {}
    for name, fn in scorers.items():
        metrics = evaluate_ranking(
            fn,
            users,
            d.n_items,
            relevant,
            exclude,
            ks=all_ks,
            block_users=block,
            item_popularity=popularity,
        )
        rankers[name], curves[name] = split_curve(metrics, cfg, curve_ks)
    return Ranked(len(users), rankers, curves)


def reference_scorers(
    prep: Prepared,
    folder: Path,
    cfg: EvalConfig,
    tuning: dict[str, float] | None = None,
    *,
    baseline: BaselineChoice | None = None,
) -> dict[str, ScoreFn]:
    """Popularity, the classical baseline and (synthetic data) the oracle; the baseline's
    validation scores per candidate go into ``tuning`` when given. ``baseline``: refit
    this choice instead of tuning (see ``choose_baseline``)."""
    d = prep.data
    scorers: dict[str, ScoreFn] = {
        "popularity": SharedScores(train_popularity(prep).astype(np.float32))
    }
    baseline_fn = baseline_scorer(prep, cfg, baseline)
    if baseline_fn is not None:
        scorers[baseline_fn[0]] = baseline_fn[1]
        if tuning is not None:
            tuning.update(baseline_fn[2])
    truth = load_truth(folder, d)
    if truth is not None:
        scorers["oracle"] = VectorScores(
            *oracle_vectors(
                truth.user_latent, truth.item_latent, truth.log_popularity, truth.temperature
            )
        )
    return scorers


def cold_start_report(
    prep: Prepared, user_vecs: torch.Tensor, item_vecs: torch.Tensor, cfg: EvalConfig
) -> dict[str, Any] | None:
    """Cold-start metrics (see ``model.cold_start``) of the model's (U, D) user and (I, D)
    item vectors, next to random and category-popularity rankers; None without new items."""
    d, split = prep.data, prep.split
    new = cold_start_items(d.inter_item, split.train, split.test, d.n_items)
    if len(new) == 0:
        return None
    new_vecs = item_vecs[torch.from_numpy(new)]
    cats = d.category.astype(np.int64)
    rng = np.random.default_rng(cfg.seed)
    cat_pop = category_popularity(cats, d.inter_item, split.train, new)
    affinity = user_category_affinity(cats, d.inter_user, d.inter_item, ~split.test, new, d.n_users)
    scorers: dict[str, NewItemScores] = {
        "model": VectorScores.of(user_vecs, new_vecs),
        "random": lambda rows: rng.random((len(rows), len(new)), dtype=np.float32),
        "category popularity": SharedScores(cat_pop),
        "user's categories": affinity,
    }
    return cold_start_metrics(
        scorers, d.inter_user, d.inter_item, split.test, new, d.n_users, d.n_items, cfg.ks
    )


def evaluate_version(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    *,
    logger: StepLogger = log,
) -> EvalReport:
    """Rank every item for test users with their train + validation items masked; stage
    metrics.json with the model, popularity, classical baseline and oracle figures.

    Every learned ranker fits on the training split only (validation steers early stopping)
    and reads each user's train + validation interactions as input (the model's history
    feature, the baseline's user row), so the comparison is even.
    """
    layout = Layout(Path(stage.root))
    folder = snapshot_path(layout, snapshot.snapshot_id)
    staging = VersionStore(layout).staging_path(stage.version_id)
    prep = load_prepared(folder, data_cfg)
    vectors = model_vectors(prep, staging)
    tuning: dict[str, float] = {}
    scorers = {"model": vector_scorer(*vectors), **reference_scorers(prep, folder, cfg, tuning)}
    ranked = rank_all(prep, scorers, cfg)
    return finish_report(prep, staging, cfg, ranked, vectors, tuning, logger)


def model_vectors(prep: Prepared, staging: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, D) vectors of every user (history from train + validation) and (I, D) item
    vectors of the staged model, checked to cover the snapshot's catalogue."""
    model = load_served_model(staging)
    item_ids, item_vecs = read_embeddings(staging)
    if not np.array_equal(item_ids, prep.data.item_id):
        raise ValueError(f"{staging}: item embeddings do not cover the snapshot's catalogue")
    user_vecs = torch.from_numpy(user_vectors(model, prep, ~prep.split.test))
    return user_vecs, torch.from_numpy(item_vecs)


def vector_scorer(user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> ScoreFn:
    """The model's score rows: inner products of user rows' vectors `(U, D)` with every
    item vector `(I, D)`."""
    return VectorScores.of(user_vecs, item_vecs)


def finish_report(
    prep: Prepared,
    staging: Path,
    cfg: EvalConfig,
    ranked: Ranked,
    vectors: tuple[torch.Tensor, torch.Tensor],
    tuning: dict[str, float],
    logger: StepLogger = log,
) -> EvalReport:
    """The report of ranked test metrics plus the cold-start figures of the model's
    ``vectors`` (users, items) and the gate's verdict; staged as metrics.json and logged."""
    n_users, rankers, curves = ranked
    cold = cold_start_report(prep, vectors[0], vectors[1], cfg)
    threshold, passed = check_gate(rankers, cfg.gate_metric, cfg.gate_min_lift)
    report = EvalReport(
        n_users=n_users,
        n_items=prep.data.n_items,
        protocol=prep.split.protocol,
        rankers=rankers,
        gate_metric=cfg.gate_metric,
        gate_threshold=threshold,
        gate_passed=passed,
        baseline_tuning=tuning,
        cold_start=cold,
        recall_curve=curves,
    )
    write_json(staging / VersionFiles.METRICS, report.model_dump(mode="json"))
    for name, metrics in rankers.items():
        logger.info(
            "%-10s %s",
            name,
            "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.split("@")[0] in _LOGGED),
        )
    return report


def enforce_gate(report: EvalReport, stage: StageRef, *, logger: StepLogger = log) -> None:
    """Raise ``QualityGateError`` (and drop the staged version) unless the model beat the
    baseline by the required margin."""
    model_value = report.rankers["model"][report.gate_metric]
    if report.gate_passed:
        logger.info(
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

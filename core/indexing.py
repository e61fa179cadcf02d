"""Indexing: a Faiss inner-product index over the staged item vectors, with real IDs,
tuned on real user vectors to the configured Recall@k against exact search."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import faiss
import numpy as np

from core.config import IndexConfig
from core.lifecycle import discard_version
from core.progress import StepLogger
from core.refs import IndexSummary, StageRef
from core.versionio import (
    embed_served_users,
    load_served_model,
    read_embeddings,
    read_serving_tables,
)
from model.ann import default_factory, exact_topk, tune_index
from model.index import build_index
from storage import Layout, VersionFiles, VersionStore, save_index

__all__ = [
    "IndexRecallError",
    "IndexSummary",
    "build_version_index",
    "describe_params",
    "resolve_factory",
    "tune_and_stage",
    "tuning_queries",
    "tuning_truth",
]

log = logging.getLogger(__name__)


class IndexRecallError(RuntimeError):
    """The tuned index misses its recall target; nothing was published."""


def tuning_queries(stage: StageRef, cfg: IndexConfig) -> np.ndarray:
    """(q, D) float32 vectors of the seeded sample of the staged version's users that the
    index is tuned on (``cfg.tune_queries`` of them, ``cfg.seed``), as served."""
    staging = VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    return _user_queries(staging, cfg.tune_queries, cfg.seed)


def tuning_truth(
    vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, cfg: IndexConfig
) -> np.ndarray:
    """(q, k) item IDs of the exact top-k of ``queries`` over the staged items (``ids``
    (n,), ``vectors`` (n, d)), k = min(cfg.k, n): the ground truth tuning measures
    recall against. A query's row does not depend on the others (``model.ann.exact_topk``),
    so query shards can compute it apart."""
    return exact_topk(vectors, ids, queries, min(cfg.k, len(ids)))


def _user_queries(staging: Path, n: int, seed: int) -> np.ndarray:
    """(q, D) vectors of a seeded sample of the version's users, as served."""
    model = load_served_model(staging)
    tables = read_serving_tables(staging, model.history_len)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(tables.user_id), min(n, len(tables.user_id)), replace=False))
    return embed_served_users(model, tables, rows)


def describe_params(params: dict[str, float]) -> str:
    """``nprobe=16, k_factor_rf=2``: search parameters as a log line shows them."""
    return ", ".join(f"{name}={value:g}" for name, value in params.items())


def build_version_index(
    stage: StageRef, cfg: IndexConfig, *, logger: StepLogger = log
) -> IndexSummary:
    """Build, tune and stage index.faiss over the staged item embeddings; raise
    ``IndexRecallError`` (discarding the version) below the recall target."""
    staging = VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    ids, vectors = read_embeddings(staging)
    factory = resolve_factory(cfg, len(ids), vectors.shape[1])
    start = time.perf_counter()
    index = build_index(vectors, ids, factory, seed=cfg.seed)
    seconds = time.perf_counter() - start
    return tune_and_stage(stage, cfg, index, factory, seconds, ids, vectors, logger=logger)


def resolve_factory(cfg: IndexConfig, n_items: int, dim: int) -> str:
    """The factory string ``cfg.factory`` means for ``n_items`` vectors of ``dim``."""
    return default_factory(n_items, dim) if cfg.factory == "auto" else cfg.factory


def tune_and_stage(
    stage: StageRef,
    cfg: IndexConfig,
    index: faiss.Index,
    factory: str,
    seconds: float,
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    truth: np.ndarray | None = None,
    logger: StepLogger = log,
) -> IndexSummary:
    """Tune a built ``index`` over the staged items (``ids`` (n,), ``vectors`` (n, d)) to
    ``cfg``'s recall target on the version's user vectors and stage it as index.faiss;
    below the target discard the version and raise ``IndexRecallError``. ``seconds``:
    what building it took (wall). ``truth``: the queries' exact top-k when already
    computed (``tuning_truth``, e.g. by query shards); computed here otherwise."""
    staging = VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    queries = tuning_queries(stage, cfg)
    k = min(cfg.k, len(ids))
    if truth is None:
        truth = tuning_truth(vectors, ids, queries, cfg)
    if truth.shape != (len(queries), k):
        raise ValueError(f"tuning ground truth is {truth.shape}, expected {(len(queries), k)}")
    tuned = tune_index(index, queries, truth, k, cfg.target_recall)
    logger.info(
        "%s over %d items built in %.2f s; %s gives Recall@%d %.4f (target %.2f), "
        "single query p50 %.3f ms p99 %.3f ms",
        factory,
        index.ntotal,
        seconds,
        describe_params(tuned.params) if tuned.knob else "exact search",
        k,
        tuned.recall,
        cfg.target_recall,
        tuned.p50_ms,
        tuned.p99_ms,
    )
    if not tuned.met:
        discard_version(stage)
        raise IndexRecallError(
            f"index {factory!r} reaches Recall@{k} {tuned.recall:.4f} at best "
            f"({describe_params(tuned.params)}), below the target {cfg.target_recall}; version "
            f"{stage.version_id} was not published and CURRENT is unchanged ({stage.parent})"
        )
    path = staging / VersionFiles.INDEX
    save_index(path, index)
    return IndexSummary(
        factory=factory,
        n_items=int(index.ntotal),
        dim=int(vectors.shape[1]),
        build_seconds=seconds,
        bytes=path.stat().st_size,
        knob=tuned.knob,
        knob_value=tuned.value,
        params=tuned.params,
        k=k,
        target_recall=cfg.target_recall,
        recall=tuned.recall,
        single_query_p50_ms=tuned.p50_ms,
        single_query_p99_ms=tuned.p99_ms,
        tune_queries=tuned.n_queries,
        trials=tuned.trials,
    )

"""Index step: a Faiss inner-product index over the staged item vectors, with real IDs,
tuned on real user vectors to the configured Recall@k against exact search."""

from __future__ import annotations

from prefect import get_run_logger, task

from core.config import IndexConfig
from core.indexing import build_version_index
from core.refs import IndexSummary, StageRef
from core.threads import apply_threads

__all__ = ["build_item_index"]


@task(name="build-index")
def build_item_index(stage: StageRef, cfg: IndexConfig, threads: int | None = None) -> IndexSummary:
    """``core.indexing.build_version_index``: build, tune and stage index.faiss; fail
    (discarding the version) below the recall target."""
    apply_threads(threads)
    return build_version_index(stage, cfg, logger=get_run_logger())

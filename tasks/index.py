"""Index step: a Faiss inner-product index over the staged item vectors, with real IDs."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task
from pydantic import BaseModel

from model.index import build_index
from storage import Layout, VersionFiles, VersionStore, save_index
from tasks.config import IndexConfig
from tasks.dataio import read_embeddings
from tasks.refs import StageRef
from tasks.runtime import apply_threads

__all__ = ["IndexSummary", "build_item_index"]


class IndexSummary(BaseModel):
    factory: str
    n_items: int
    dim: int
    build_seconds: float
    bytes: int


@task(name="build-index")
def build_item_index(stage: StageRef, cfg: IndexConfig, threads: int | None = None) -> IndexSummary:
    """Build the index configured by ``cfg`` and stage it as index.faiss."""
    logger = get_run_logger()
    apply_threads(threads)
    staging = VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    ids, vectors = read_embeddings(staging)
    start = time.perf_counter()
    index = build_index(vectors, ids, cfg.factory)
    seconds = time.perf_counter() - start
    path = staging / VersionFiles.INDEX
    save_index(path, index)
    logger.info("built %s index over %d items in %.2f s", cfg.factory, index.ntotal, seconds)
    return IndexSummary(
        factory=cfg.factory,
        n_items=int(index.ntotal),
        dim=int(vectors.shape[1]),
        build_seconds=seconds,
        bytes=path.stat().st_size,
    )

"""Embedding: every catalogue item of a staged version through its item tower."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from core.progress import Progress, ProgressFactory, StepLogger
from core.refs import StageRef
from core.versionio import load_served_model, read_serving_tables, write_embeddings
from model.embed import embed_items
from storage import Layout, VersionStore

__all__ = ["embed_version_items"]

log = logging.getLogger(__name__)


def embed_version_items(
    stage: StageRef,
    batch_size: int = 8192,
    *,
    logger: StepLogger = log,
    progress: ProgressFactory = Progress,
) -> int:
    """Write item_embeddings.parquet for every item of the staged catalogue; returns the count.

    Items unseen in training go through the unknown-ID bucket, so they are embedded from
    their category and content alone.
    """
    staging = VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    model = load_served_model(staging)
    items = read_serving_tables(staging)
    n = len(items.item_id)
    bar = progress(
        "embed-progress", f"Embedding {n:,} items for version {stage.version_id}", n, "items"
    )
    categories = items.item_category_rows(model.spec.n_categories)
    # A torch buffer, not np.empty: numpy asks for huge pages for large arrays, whose first
    # touch cost 0.5-1.3 s at 1M items here (see model/embed.py).
    vectors = torch.empty((n, int(model.spec.tower.embedding_dim)), dtype=torch.float32).numpy()
    # ~20 progress updates; chunks are whole batches so batching is unchanged.
    chunk = max(batch_size, -(-n // 20 // batch_size) * batch_size)
    start = time.perf_counter()
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        vectors[lo:hi] = embed_items(
            model,
            items.item_id_row[lo:hi],
            categories[lo:hi],
            items.content[lo:hi],
            batch_size=batch_size,
        )
        bar.update(hi)
    seconds = time.perf_counter() - start
    write_embeddings(staging, items.item_id, vectors)
    logger.info(
        "embedded %d items in %.2f s (%.0f items/s)",
        len(vectors),
        seconds,
        len(vectors) / max(seconds, 1e-9),
    )
    return len(vectors)

"""Embedding step: every catalogue item through the staged item tower."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import get_run_logger, task

from model.embed import embed_items
from storage import Layout, VersionStore
from tasks.refs import StageRef
from tasks.runtime import apply_threads
from tasks.versionio import load_served_model, read_serving_tables, write_embeddings

__all__ = ["embed_catalogue"]


@task(name="embed-items")
def embed_catalogue(stage: StageRef, threads: int | None = None, batch_size: int = 8192) -> int:
    """Write item_embeddings.parquet for every item of the staged catalogue; returns the count.

    Items unseen in training go through the unknown-ID bucket, so they are embedded from
    their category and content alone.
    """
    logger = get_run_logger()
    apply_threads(threads)
    staging = VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    model = load_served_model(staging)
    items = read_serving_tables(staging)
    start = time.perf_counter()
    vectors = embed_items(
        model,
        items.item_id_row,
        items.item_category_rows(model.spec.n_categories),
        items.content,
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - start
    write_embeddings(staging, items.item_id, vectors)
    logger.info(
        "embedded %d items in %.2f s (%.0f items/s)",
        len(vectors),
        seconds,
        len(vectors) / max(seconds, 1e-9),
    )
    return len(vectors)

"""Embedding: every catalogue item of a staged version through its item tower, streamed.

The staged items table is read in row groups (``storage.iter_row_range``) and the vectors
are written chunk by chunk (``storage.TableWriter``), so memory holds one chunk of items
and vectors, not the catalogue: at 100M items the vectors alone are 25.6 GB. Chunks are
whole batches of the item tower, so the vectors are those of one pass over all items
(the batch shapes, hence the float sums, are the same).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from core.progress import Progress, ProgressFactory, StepLogger
from core.refs import StageRef
from core.versionio import load_served_model
from model.embed import embed_items
from model.features import category_rows
from model.towers import TwoTower
from storage import (
    ITEM_EMBEDDINGS,
    VERSION_ITEMS,
    Layout,
    TableWriter,
    VersionFiles,
    VersionStore,
    arrow_to_vectors,
    iter_row_range,
    read_num_rows,
    vectors_to_arrow,
)

__all__ = ["EMBEDDING_ROW_GROUP", "embed_version_items", "embedded_chunks"]

log = logging.getLogger(__name__)

_COLUMNS = ["item_id", "id_row", "category", "content"]

# Rows per row group of item_embeddings.parquet, however the vectors were produced (in
# chunks here, in shards on Dask): the same vectors make the same file, byte for byte.
# About 34 MB of 64-d vectors buffered.
EMBEDDING_ROW_GROUP = 1 << 17


def embedded_chunks(
    staging: Path, model: TwoTower, lo: int, hi: int, batch_size: int, chunk_batches: int = 16
) -> Iterator[pa.Table]:
    """Staged item rows ``[lo, hi)`` as (item_id, embedding) tables of ``chunk_batches``
    whole batches each (the last one shorter); ``lo`` must start a batch for the vectors
    to be those of one pass."""
    n_categories = model.spec.n_categories
    rows = batch_size * chunk_batches
    path = staging / VersionFiles.ITEMS
    pending: list[pa.RecordBatch] = []
    held = 0

    def embed(table: pa.Table) -> pa.Table:
        # Writable copies of the chunk: torch refuses to wrap Arrow's read-only buffers.
        ids: npt.NDArray[np.int64] = table.column("item_id").to_numpy()
        vectors = embed_items(
            model,
            table.column("id_row").to_numpy().copy(),
            category_rows(table.column("category").to_numpy(), n_categories),
            arrow_to_vectors(table.column("content"), copy=True),
            batch_size=batch_size,
        )
        return pa.table({"item_id": ids, "embedding": vectors_to_arrow(vectors)})

    # Row groups and record batches do not fall on batch multiples: regroup them.
    for batch in iter_row_range(path, VERSION_ITEMS, lo, hi, _COLUMNS, batch_rows=rows):
        pending.append(batch)
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield embed(table.slice(0, rows))
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield embed(pa.Table.from_batches(pending).combine_chunks())


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
    n = read_num_rows(staging / VersionFiles.ITEMS, VERSION_ITEMS)
    bar = progress(
        "embed-progress", f"Embedding {n:,} items for version {stage.version_id}", n, "items"
    )
    # About 20 progress updates, within 16-128 batches a chunk.
    chunk_batches = min(128, max(16, -(-n // 20 // batch_size)))
    start = time.perf_counter()
    done = 0
    path = staging / VersionFiles.ITEM_EMBEDDINGS
    with TableWriter(path, ITEM_EMBEDDINGS, row_group_rows=EMBEDDING_ROW_GROUP) as writer:
        for table in embedded_chunks(staging, model, 0, n, batch_size, chunk_batches):
            writer.write(table)
            done += table.num_rows
            bar.update(done)
        if n == 0:
            dim = model.dim
            empty = np.empty((0, dim), np.float32)
            ids = np.empty(0, np.int64)
            writer.write(pa.table({"item_id": ids, "embedding": vectors_to_arrow(empty)}))
    seconds = time.perf_counter() - start
    logger.info(
        "embedded %d items in %.2f s (%.0f items/s)", done, seconds, done / max(seconds, 1e-9)
    )
    return done

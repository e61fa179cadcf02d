"""Steps split into shards for a distributed task runner: plan -> shards -> merge.

A distributed runner (``runtime.task_runner: dask``) maps the shard function over its
workers; each shard reads what it needs from the store, writes its result as a part file
(``storage.shards``) and returns a ``PartRef``. The merge checks and joins the parts in
order. Shard boundaries sit on multiples of the batch the unsplit step uses, so every
shard computes exactly the batches one process would: the merged result is the unsplit
result, and a rerun after a failure reuses the kept result (``core.resume``) either way.

This module holds item embedding and the shared plan type; evaluation is in
``core.sharded_eval``.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from core.embedding import EMBEDDING_ROW_GROUP, embedded_chunks
from core.progress import StepLogger
from core.refs import StageRef
from core.resume import embed_key, keep_result, restore_kept
from core.versionio import load_served_model
from storage import (
    ITEM_EMBEDDINGS,
    VERSION_ITEMS,
    Layout,
    PartRef,
    ShardFolder,
    TableWriter,
    VersionFiles,
    iter_row_range,
    read_num_rows,
    stage_listing,
)

__all__ = [
    "EmbedPlan",
    "PartRef",
    "Span",
    "embed_shard",
    "merge_embeddings",
    "plan_embedding",
    "shard_folder",
    "spans",
    "staged_here",
    "staging_dir",
]

log = logging.getLogger(__name__)

EMBED_STEP = "embed-items"


class Span(BaseModel):
    """Shard ``index`` covers rows ``[lo, hi)`` of the step's row order."""

    model_config = ConfigDict(frozen=True)

    index: int
    lo: int
    hi: int


def spans(n: int, size: int | None, align: int, count: int = 1) -> list[Span]:
    """``n`` rows cut into shards of ``size`` rows (None: ``n`` split in ``count``) rounded
    up to a multiple of ``align`` (the step's batch), the last one shorter; no shard for
    ``n == 0``."""
    if size is None:
        size = max(1, -(-n // max(count, 1)))
    if n < 0 or size < 1 or align < 1:
        raise ValueError(f"need n >= 0, size >= 1 and align >= 1, got {n}, {size}, {align}")
    step = -(-size // align) * align
    return [Span(index=i, lo=lo, hi=min(lo + step, n)) for i, lo in enumerate(range(0, n, step))]


class EmbedPlan(BaseModel):
    """What item embedding will do: restore a kept result (``restored`` items) or run
    ``spans`` of ``batch_size``-aligned item rows; ``key`` is its resume key ('' = off)."""

    model_config = ConfigDict(frozen=True)

    key: str
    restored: int | None
    spans: list[Span]
    batch_size: int


def staging_dir(stage: StageRef) -> Path:
    """The staged version's folder; FileNotFoundError (``staged_here``) when this worker
    cannot see it."""
    path = Layout(Path(stage.root)).staging_version_dir(stage.version_id)
    return staged_here(path, f"version {stage.version_id}")


def staged_here(path: Path, what: str) -> Path:
    """``path``, a staged folder a shard reads, when this process sees it; else a
    FileNotFoundError that says why a shard may not see it and what to do.

    Shards pass files, not bytes, between Dask workers: the staging folders live under
    the store's root (an object-store root's local cache), so every worker must see that
    root at the same path."""
    if path.is_dir():
        return path
    raise FileNotFoundError(
        f"{what}: the staged folder {path} is not visible on this worker "
        f"(host {socket.gethostname()}): the run that staged it has ended, or this worker "
        "runs on another machine. Every Dask worker must see the store's root at the same "
        "path: put the root on a shared file system, and for an s3:// root set "
        "TOWERFLOW_CACHE_DIR to a folder on one."
    )


def shard_folder(stage: StageRef, step: str) -> ShardFolder:
    """Where ``step``'s shard parts of the staged version go (``storage.shards``)."""
    return ShardFolder(Layout(Path(stage.root)), stage.version_id, step)


def plan_embedding(
    stage: StageRef,
    shard_items: int | None,
    batch_size: int = 8192,
    *,
    n_shards: int = 1,
    resume: bool = True,
    logger: StepLogger = log,
) -> EmbedPlan:
    """Plan the embedding of every staged item in shards of about ``shard_items`` rows
    (None: ``n_shards`` shards), or restore a failed run's vectors for the same staged
    model."""
    key = embed_key(stage) if resume else ""
    if resume:
        meta = restore_kept(stage, EMBED_STEP, key, logger)
        if meta is not None:
            return EmbedPlan(key=key, restored=int(meta["count"]), spans=[], batch_size=batch_size)
    shard_folder(stage, EMBED_STEP).remove()  # parts of an earlier attempt are never merged
    n = read_num_rows(staging_dir(stage) / VersionFiles.ITEMS, VERSION_ITEMS)
    cut = spans(n, shard_items, batch_size, n_shards)
    logger.info("embed-items: %d items in %d shard(s)", n, len(cut))
    return EmbedPlan(key=key, restored=None, spans=cut, batch_size=batch_size)


def embed_shard(stage: StageRef, span: Span, batch_size: int) -> PartRef:
    """Embed staged item rows ``[span.lo, span.hi)`` and write them as a part (read in
    row groups: the shard's slice of the items, never the whole table)."""
    staging = staging_dir(stage)
    model = load_served_model(staging)
    table = pa.concat_tables(list(embedded_chunks(staging, model, span.lo, span.hi, batch_size)))
    return shard_folder(stage, EMBED_STEP).write(
        f"part-{span.index:05d}.parquet", table, ITEM_EMBEDDINGS
    )


def merge_embeddings(
    stage: StageRef,
    plan: EmbedPlan,
    parts: list[PartRef],
    *,
    logger: StepLogger = log,
) -> int:
    """Check and join the parts (in shard order) into item_embeddings.parquet; keep the
    result for a rerun when the plan has a key; returns the number of items."""
    if plan.restored is not None:
        return plan.restored
    if len(parts) != len(plan.spans):
        raise ValueError(f"embed-items: {len(parts)} part(s) for {len(plan.spans)} shard(s)")
    staging = staging_dir(stage)
    before = stage_listing(staging)
    folder = shard_folder(stage, EMBED_STEP)
    start = time.perf_counter()
    # Part by part into the table (one part in memory), each checked against the staged
    # items it must cover; a mismatch leaves no table behind (TableWriter discards it).
    items = staging / VersionFiles.ITEMS
    n = read_num_rows(items, VERSION_ITEMS)
    uncovered = ValueError(f"embed-items: the parts do not cover the {n} staged items")
    if n == 0 or plan.spans[-1].hi != n:
        raise uncovered
    path = staging / VersionFiles.ITEM_EMBEDDINGS
    with TableWriter(path, ITEM_EMBEDDINGS, row_group_rows=EMBEDDING_ROW_GROUP) as writer:
        done = 0
        for span, ref in zip(plan.spans, parts, strict=True):
            table = folder.read(ref, ITEM_EMBEDDINGS)
            staged = [
                b.column(0)
                for b in iter_row_range(items, VERSION_ITEMS, span.lo, span.hi, ["item_id"])
            ]
            ids = pa.chunked_array(staged, pa.int64())
            if span.lo != done or not table.column("item_id").equals(ids):
                raise uncovered
            writer.write(table)
            done += table.num_rows
    folder.remove()
    logger.info(
        "embed-items: merged %d part(s), %d items, in %.2f s",
        len(parts),
        done,
        time.perf_counter() - start,
    )
    if plan.key:
        keep_result(stage, EMBED_STEP, plan.key, before, {"count": done}, logger)
    return done

"""The index build split over workers: plan (train) -> shards (add; ground truth) -> merge
(+ tune).

- **Plan** (the flow's process): train the empty index once on a seeded sample of the
  staged item vectors (the IVF quantizer, the PQ codebooks), exactly as a one-process
  build trains it, and write it as the ``template`` part.
- **Shards** (any worker): a copy of the template, filled with item rows ``[lo, hi)``,
  written as a part. Adding is the costly half of an IVF-PQ build (every vector is
  assigned to a list and encoded), and it splits by rows.
- **Query shards** (any worker, beside the item shards): the exact top-k of a slice of the
  tuning queries over every staged item, the ground truth that tuning measures recall
  against. It is the part of tuning that grows with the catalogue (a scan of every item
  per query: 58 s for 1,000 queries at 10M items here), and it splits by queries; each
  query's row is the one a single process computes (``model.ann.exact_topk``).
- **Merge** (the flow's process): the parts' inverted lists appended in shard order
  (``model.index_merge``), which is the index one process builds, byte for byte; then
  the usual tuning to the recall target against the query shards' ground truth, and
  staging (``core.indexing.tune_and_stage``). The sweep over settings stays here: each
  trial searches the whole index.

A factory whose index cannot be merged (HNSW: a graph is built by inserting every vector)
gets no shards: the merge builds it in one process, as the local runner does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import faiss
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from core.config import IndexConfig
from core.indexing import resolve_factory, tune_and_stage, tuning_queries, tuning_truth
from core.progress import StepLogger
from core.refs import IndexSummary, StageRef
from core.sharded import Span, shard_folder, spans, staging_dir
from core.versionio import read_embeddings
from model.index import build_index, fill_index, finish_index, trained_index
from model.index_merge import can_merge, merge_parts
from storage import ColumnSpec, PartRef, ShardFolder, TableSpec

__all__ = ["INDEX_STEP", "IndexPlan", "index_shard", "merge_index", "plan_index", "truth_shard"]

log = logging.getLogger(__name__)

INDEX_STEP = "build-index"
_TEMPLATE = "template.faiss"


class IndexPlan(BaseModel):
    """What the sharded build will do: ``factory`` for the staged items; the trained
    empty ``template`` part and the item ``spans`` to add (None and [] when the index
    cannot be merged: the merge builds it whole); ``query_spans``: the slices of the
    tuning queries whose ground truth shards compute; ``started``: the plan's start (Unix
    seconds), so the build's wall time covers plan, shards and merge."""

    model_config = ConfigDict(frozen=True)

    factory: str
    template: PartRef | None
    spans: list[Span]
    query_spans: list[Span]
    started: float


def plan_index(
    stage: StageRef,
    cfg: IndexConfig,
    shard_items: int | None,
    n_shards: int = 1,
    *,
    logger: StepLogger = log,
) -> IndexPlan:
    """Train the empty index on the staged vectors and cut the items into shards of about
    ``shard_items`` rows (None: ``n_shards`` shards)."""
    started = time.time()
    folder = shard_folder(stage, INDEX_STEP)
    folder.remove()  # parts of an earlier attempt are never merged
    ids, vectors = read_embeddings(staging_dir(stage))
    factory = resolve_factory(cfg, len(ids), vectors.shape[1])
    # A version with fewer users than tune_queries tunes on all of them: the last query
    # shards are then short or empty.
    queries = spans(cfg.tune_queries, None, 1, n_shards)
    start = time.perf_counter()
    template = trained_index(vectors, factory, seed=cfg.seed)
    if not can_merge(template):
        logger.info("build-index: %s cannot be merged from parts; built in one process", factory)
        return IndexPlan(
            factory=factory, template=None, spans=[], query_spans=queries, started=started
        )
    ref = folder.write_index(_TEMPLATE, template)
    cut = spans(len(ids), shard_items, 1, n_shards)
    logger.info(
        "build-index: %s trained in %.2f s; %d items to add in %d shard(s)",
        factory,
        time.perf_counter() - start,
        len(ids),
        len(cut),
    )
    return IndexPlan(factory=factory, template=ref, spans=cut, query_spans=queries, started=started)


def index_shard(stage: StageRef, plan: IndexPlan, span: Span) -> PartRef:
    """A copy of the plan's template holding staged item rows ``[span.lo, span.hi)``,
    written as a part."""
    if plan.template is None:
        raise ValueError(f"build-index: {plan.factory!r} has no shards to add")
    folder = shard_folder(stage, INDEX_STEP)
    index = folder.read_index(plan.template)
    ids, vectors = read_embeddings(staging_dir(stage))
    fill_index(index, vectors[span.lo : span.hi], ids[span.lo : span.hi])
    return folder.write_index(f"part-{span.index:05d}.faiss", index)


def truth_shard(stage: StageRef, cfg: IndexConfig, span: Span) -> PartRef:
    """The exact top-k item IDs of tuning queries ``[span.lo, span.hi)`` over every staged
    item, written as a part (``span.hi - span.lo`` rows of k IDs, -1 past the end)."""
    ids, vectors = read_embeddings(staging_dir(stage))
    queries = tuning_queries(stage, cfg)[span.lo : span.hi]
    truth = tuning_truth(vectors, ids, queries, cfg)
    table = pa.table({"item_ids": pa.FixedSizeListArray.from_arrays(truth.ravel(), truth.shape[1])})
    return shard_folder(stage, INDEX_STEP).write(
        f"truth-{span.index:05d}.parquet", table, _truth_spec(truth.shape[1])
    )


def _truth_spec(k: int) -> TableSpec:
    return TableSpec("tuning_truth", (ColumnSpec("item_ids", pa.list_(pa.int64(), k)),))


def _read_truth(folder: ShardFolder, plan: IndexPlan, truth: list[PartRef], k: int) -> np.ndarray:
    """The query shards' ground truth in query order: (q, k) int64."""
    if len(truth) != len(plan.query_spans):
        raise ValueError(
            f"build-index: {len(truth)} ground-truth part(s) for {len(plan.query_spans)} "
            "query shard(s)"
        )
    rows = [np.zeros((0, k), np.int64)]
    for ref in truth:
        column = folder.read(ref, _truth_spec(k)).column("item_ids").combine_chunks()
        rows.append(column.flatten().to_numpy().reshape(ref.rows, k))
    return np.concatenate(rows)


def merge_index(
    stage: StageRef,
    cfg: IndexConfig,
    plan: IndexPlan,
    parts: list[PartRef],
    truth: list[PartRef],
    *,
    logger: StepLogger = log,
) -> IndexSummary:
    """Check and merge the parts in shard order (or build whole an index that cannot be
    merged), then tune it against the query shards' ``truth`` parts (in query order) and
    stage it as ``core.indexing.build_version_index`` does."""
    ids, vectors = read_embeddings(staging_dir(stage))
    folder = shard_folder(stage, INDEX_STEP)
    if plan.template is None:
        start = time.perf_counter()
        index = build_index(vectors, ids, plan.factory, seed=cfg.seed)
        seconds = time.perf_counter() - start
    else:
        if len(parts) != len(plan.spans):
            raise ValueError(f"build-index: {len(parts)} part(s) for {len(plan.spans)} shard(s)")
        covered = sum(ref.rows for ref in parts)
        if covered != len(ids):
            raise ValueError(
                f"build-index: the parts hold {covered} items, not the {len(ids)} staged"
            )
        start = time.perf_counter()
        index = merge_parts(folder.read_index(plan.template), _loaded(folder, parts))
        finish_index(index)
        logger.info(
            "build-index: merged %d part(s) in %.2f s", len(parts), time.perf_counter() - start
        )
        seconds = time.time() - plan.started
    exact = _read_truth(folder, plan, truth, min(cfg.k, len(ids)))
    folder.remove()
    return tune_and_stage(
        stage, cfg, index, plan.factory, seconds, ids, vectors, truth=exact, logger=logger
    )


def _loaded(folder: ShardFolder, parts: list[PartRef]) -> Iterator[faiss.Index]:
    """Each part, read (and checked) only when the merge reaches it."""
    for ref in parts:
        yield folder.read_index(ref)

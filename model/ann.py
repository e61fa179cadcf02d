"""Choosing and tuning an approximate index against exact search.

Recall of an ANN index depends on the data (docs/performance.md: clustered vectors are far
easier than near-uniform ones), so the search knob (nprobe / efSearch) is chosen on
the trained towers' real vectors: the cheapest setting whose Recall@K against exact
search on a sample of real user queries meets the target.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import faiss
import numpy as np
import numpy.typing as npt

from model.fast_rank import VectorScores, vector_topk
from model.index import search, set_index_params
from model.sets import CsrSets

__all__ = [
    "TuneResult",
    "default_factory",
    "exact_topk",
    "measure_latency",
    "recall_against",
    "refine_factors",
    "search_knob",
    "tune_index",
]

log = logging.getLogger(__name__)

# Catalogues up to this size are searched exactly: a Flat scan of 50k x 64 floats takes
# ~0.5 ms single-threaded (docs/performance.md), so an approximation would buy little and
# cost recall.
EXACT_MAX_ITEMS = 50_000
# Above this, IVF-Flat memory (d * 4 bytes per item) dominates; compress with PQ + refine.
IVF_FLAT_MAX_ITEMS = 5_000_000


def default_factory(n_items: int, dim: int) -> str:
    """Index for a catalogue size: exact below 50k, IVF-Flat to 5M, IVF-PQ + refine above.

    nlist ~ 4 sqrt(n) keeps lists around sqrt(n)/4 long, the usual balance between the
    coarse quantizer's cost and the list scan.
    """
    if n_items <= EXACT_MAX_ITEMS:
        return "Flat"
    nlist = int(4 * np.sqrt(n_items))
    if n_items <= IVF_FLAT_MAX_ITEMS:
        return f"IVF{nlist},Flat"
    return f"IVF{nlist},PQ{max(dim // 2, 1)},RFlat"


def search_knob(index: faiss.Index) -> tuple[str, list[int]] | None:
    """The index's accuracy knob and the values worth trying, cheapest first (None: exact)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        values = [
            v for v in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512) if v < ivf.nlist
        ]
        return "nprobe", [*values, int(ivf.nlist)]
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexHNSW):
        return "efSearch", [16, 32, 64, 96, 128, 192, 256, 384, 512, 1024]
    return None


def exact_topk(
    vectors: npt.NDArray[np.float32],
    ids: npt.NDArray[np.int64],
    queries: npt.NDArray[np.float32],
    k: int,
) -> npt.NDArray[np.int64]:
    """(q, k) item IDs of the exact inner-product top-k (the ground truth for tuning), ties
    by lower row, -1 past the end.

    Through ``model.fast_rank.vector_topk``: a query's answer does not depend on the other
    queries searched with it, so ground truth computed by query shards on several workers
    is the one-process ground truth, bit for bit."""
    if len(vectors) != len(ids):
        raise ValueError(f"{len(vectors)} vectors but {len(ids)} ids")
    n_queries = len(queries)
    none = np.zeros(0, np.int64)
    rows = vector_topk(
        VectorScores.of(queries, vectors),
        np.arange(n_queries, dtype=np.int64),
        len(vectors),
        CsrSets.from_pairs(none, none, n_queries),
        k,
    )
    return np.where(rows >= 0, np.asarray(ids, np.int64)[np.maximum(rows, 0)], -1)


def recall_against(approx: npt.NDArray[np.int64], exact: npt.NDArray[np.int64]) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (ids -1 ignored)."""
    hits = total = 0
    for a, e in zip(approx, exact, strict=True):
        truth = e[e >= 0]
        hits += len(np.intersect1d(a[a >= 0], truth, assume_unique=True))
        total += len(truth)
    return hits / max(total, 1)


def measure_latency(
    index: faiss.Index, queries: npt.NDArray[np.float32], k: int, n: int = 200, threads: int = 1
) -> tuple[float, float]:
    """(p50, p99) milliseconds of single-query searches over the first ``n`` queries, on
    ``threads`` Faiss threads (the process's count is restored afterwards).

    One thread by default, as the API serves a query (``service.settings.threads``): with
    more, every query pays OpenMP's parallel regions. Measured at 2M vectors with 12,649
    lists, nprobe 16: IVF-PQ 0.148 ms on 1 thread vs 0.455 ms on 2, and with a refinement
    stage 0.165 ms vs 3.96 ms (docs/scaling.md).
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        times = []
        for q in queries[:n]:
            start = time.perf_counter()
            index.search(q[None, :], k)
            times.append((time.perf_counter() - start) * 1e3)
    finally:
        faiss.omp_set_num_threads(before)
    p50, p99 = np.percentile(times, [50, 99])
    return float(p50), float(p99)


@dataclass(frozen=True)
class TuneResult:
    """What tuning chose and measured; goes into the version manifest."""

    knob: str | None  # "nprobe", "efSearch" or None for exact search
    value: int | None
    k: int
    target: float
    recall: float  # Recall@k vs exact on the query sample
    met: bool
    p50_ms: float
    p99_ms: float
    n_queries: int
    trials: list[dict[str, float]] = field(default_factory=list)  # every setting tried
    # Every search parameter chosen, the knob included (e.g. nprobe and k_factor_rf).
    params: dict[str, float] = field(default_factory=dict)


def refine_factors(index: faiss.Index) -> list[int]:
    """``k_factor_rf`` values worth trying, cheapest first, when the index re-ranks a
    compressed search with exact vectors (``IndexRefine``: factories ending in ``RFlat``);
    [] otherwise. The first stage returns ``k * k_factor`` candidates for the exact
    re-ranking, so a compressed stage that misses true neighbours at rank k can still
    find them a little deeper."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexIDMap):
        inner = faiss.downcast_index(inner.index)
    return [1, 2, 4, 8, 16] if isinstance(inner, faiss.IndexRefine) else []


def tune_index(
    index: faiss.Index,
    queries: npt.NDArray[np.float32],
    exact: npt.NDArray[np.int64],
    k: int,
    target: float,
    sweep_after: int = 0,
    latency_queries: int = 100,
) -> TuneResult:
    """Set the fastest search parameters whose Recall@k vs ``exact`` reaches ``target``:
    the knob (nprobe / efSearch) and, for an index with a refinement stage, its
    ``k_factor_rf`` (every knob Faiss's ``ParameterSpace`` exposes that changes recall).

    For each refinement factor (smallest first) the knob is swept upwards to the first
    value that meets the target; a larger factor only tries knob values below the best
    found so far. The setting kept is the one with the smallest knob, then the smallest
    factor: probing lists costs about sqrt(n) / 4 codes per list and grows with the
    catalogue, while re-ranking costs k * k_factor exact distances whatever its size, and
    at the sizes that use refinement (``default_factory``: above 5M items) the probes
    dominate. The choice is by that order, not by measured latency, so that a nightly's
    index does not depend on how busy the machine was while it was tuned.

    Args:
        index: a built index (modified in place: the chosen values are set).
        queries: (q, d) real user vectors; exact: (q, k) their exact top-k item IDs.
        sweep_after: values measured beyond the chosen one, for the recall-vs-latency
            curve only (the benchmark sets it; the nightly run does not pay for it).
        latency_queries: single queries timed per trial (p50 / p99 ms in each trial).
    If nothing reaches the target the most accurate setting is kept and ``met`` is False.
    """
    knob = search_knob(index)
    if knob is None:
        recall = recall_against(search(index, queries, k)[1], exact)
        p50, p99 = measure_latency(index, queries, k)
        return TuneResult(None, None, k, target, recall, recall >= target, p50, p99, len(queries))
    name, values = knob
    if name == "efSearch":
        values = [v for v in values if v >= k] or [max(values)]
    trials: list[dict[str, float]] = []
    best: dict[str, float] | None = None  # the fastest trial meeting the target
    top: dict[str, float] | None = None  # the most accurate trial
    factors: list[int | None] = [*refine_factors(index)] or [None]
    for factor in factors:
        extra = {} if factor is None else {"k_factor_rf": float(factor)}
        beyond = 0
        met_here = False
        for value in values:
            if best is not None and not met_here and value >= best[name]:
                break  # more candidates at the same knob: never faster than the best
            set_index_params(index, {name: value, **extra})
            got = recall_against(search(index, queries, k)[1], exact)
            p50, p99 = measure_latency(index, queries, k, latency_queries)
            trial = {name: value, **extra, "recall": got, "p50_ms": p50, "p99_ms": p99}
            trials.append(trial)
            log.info(
                "%s=%d%s: Recall@%d %.4f (target %.3f), p50 %.3f ms",
                name,
                value,
                f", k_factor_rf={factor}" if factor is not None else "",
                k,
                got,
                target,
                p50,
            )
            if top is None or got > top["recall"]:
                top = trial
            if met_here:
                beyond += 1
            elif got >= target:
                met_here = True
                best = trial  # a smaller knob than any earlier best (see the break above)
            if met_here and beyond >= sweep_after:
                break
    chosen = best or top
    assert chosen is not None
    params = {p: chosen[p] for p in (name, "k_factor_rf") if p in chosen}
    set_index_params(index, params)
    p50, p99 = measure_latency(index, queries, k)
    return TuneResult(
        name,
        int(chosen[name]),
        k,
        target,
        chosen["recall"],
        best is not None,
        p50,
        p99,
        len(queries),
        trials,
        params,
    )

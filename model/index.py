"""In-memory Faiss index factory for inner-product retrieval over item embeddings.

Owns how an index is built (factory string, ID mapping, seeded training), searched and
tuned (nprobe / efSearch, threads, BLAS threshold). Reading and writing indexes belongs
to `storage`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import faiss
import numpy as np
import numpy.typing as npt

__all__ = [
    "build_index",
    "configure_threads",
    "default_train_size",
    "fill_index",
    "finish_index",
    "index_metric_name",
    "search",
    "set_index_params",
    "set_search_params",
    "trained_index",
    "tune_blas_threshold",
]

logger = logging.getLogger(__name__)

# IVF training sample per list. 64 is well above faiss's floor (it warns under 39 points
# per centroid) and cost nothing measurable in recall at 1M items (docs/scaling.md: IVF4000
# built in ~19 s instead of ~65 s with 256, the same nprobe 8 meeting Recall@100 0.95:
# 0.963 vs 0.967); faiss's k-means would use at most 256 per centroid anyway.
_POINTS_PER_CENTROID = 64
# Enough for PQ / SQ codebooks (256 centroids per sub-quantizer) when there is no IVF.
_DEFAULT_NON_IVF_TRAIN = 65_536


def _as_matrix(x: npt.ArrayLike, name: str) -> npt.NDArray[np.float32]:
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n, d) matrix, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be numeric, got {arr.dtype}")
    # Faiss reads raw float32 C-order buffers; anything else is converted once here.
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_ids(ids: npt.ArrayLike, n: int) -> npt.NDArray[np.int64]:
    arr = np.asarray(ids)
    if arr.shape != (n,):
        raise ValueError(f"ids must have shape ({n},) to match the embeddings, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be integers, got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.min() < 0:
        raise ValueError("ids must be >= 0: faiss returns -1 for a missing result")
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != n:
        dupes = uniq[counts > 1][:5].tolist()
        # add_with_ids does not deduplicate: a repeated id would be two vectors.
        raise ValueError(f"ids must be unique, found duplicates such as {dupes}")
    return arr


def _supports_add_with_ids(index: faiss.Index) -> bool:
    if isinstance(index, faiss.IndexIVF | faiss.IndexIDMap | faiss.IndexIDMap2):
        return True
    if isinstance(index, faiss.IndexPreTransform):
        return _supports_add_with_ids(faiss.downcast_index(index.index))
    # Flat, HNSW, PQ, Refine (even over IVF) only append sequential ids.
    return False


def default_train_size(index: faiss.Index) -> int:
    """Rows ``build_index`` trains an untrained index on by default (before capping at n)."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        return _POINTS_PER_CENTROID * int(ivf.nlist)
    return _DEFAULT_NON_IVF_TRAIN


def build_index(
    embeddings: npt.ArrayLike,
    ids: npt.ArrayLike,
    factory: str = "Flat",
    *,
    train_sample: int | None = None,
    seed: int = 0,
    ef_construction: int | None = None,
) -> faiss.Index:
    """Build an inner-product index holding `embeddings` under their real item IDs.

    Args:
        embeddings: `(n, d) float32` item-tower outputs (searched by inner product:
            the cosine, plus the item's offset with the bias slot); other
            dtypes / orders are converted. NaN, inf and empty input are rejected.
        ids: `(n,) int64` unique, non-negative item IDs returned by `search`.
        factory: `faiss.index_factory` string, e.g. "Flat", "IVF1024,Flat", "HNSW32".
        train_sample: rows used to train an untrained index, drawn without replacement;
            default `64 * nlist` for IVF,
            65,536 otherwise; capped at `n`.
        seed: seed of the training sample.
        ef_construction: HNSW build breadth; faiss's default 40 caps recall, ~160 is
            better at every efSearch for ~3-4x the build time (docs/performance.md).

    Returns:
        A trained, filled index; wrapped in `IndexIDMap2` when the factory's index cannot
        store arbitrary IDs (Flat, HNSW, ...), so `reconstruct(id)` works for Flat. IVF
        indexes get a hashtable direct map for `reconstruct(id)` and cheap `remove_ids`.
        The same bytes as `trained_index` + `fill_index` in parts merged by
        `model.index_merge.merge_parts`.
    """
    xb = _as_matrix(embeddings, "embeddings")
    item_ids = _as_ids(ids, len(xb))
    started = time.perf_counter()
    index = _trained(xb, factory, train_sample, seed, ef_construction)
    train_s = time.perf_counter() - started
    index.add_with_ids(xb, item_ids)
    finish_index(index)
    logger.debug(
        "built %s index: %d x %d, train %.2f s, add %.2f s",
        factory,
        len(xb),
        xb.shape[1],
        train_s,
        time.perf_counter() - started - train_s,
    )
    return index


def trained_index(
    embeddings: npt.ArrayLike,
    factory: str,
    *,
    train_sample: int | None = None,
    seed: int = 0,
    ef_construction: int | None = None,
) -> faiss.Index:
    """An empty inner-product index of `factory`, trained (when it needs training) on a
    seeded sample of `embeddings` `(n, d)`, ready for `fill_index`. Arguments as in
    `build_index`; wrapped in `IndexIDMap2` when the index cannot store arbitrary IDs."""
    xb = _as_matrix(embeddings, "embeddings")
    return _trained(xb, factory, train_sample, seed, ef_construction)


def _trained(
    xb: npt.NDArray[np.float32],
    factory: str,
    train_sample: int | None,
    seed: int,
    ef_construction: int | None,
) -> faiss.Index:
    """`trained_index` on an already checked `(n, d)` float32 matrix."""
    n, d = xb.shape
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"faiss cannot build factory {factory!r} for d={d}: {err}") from err

    if ef_construction is not None:
        if not isinstance(index, faiss.IndexHNSW):
            raise ValueError(f"ef_construction applies to HNSW factories, not {factory!r}")
        index.hnsw.efConstruction = int(ef_construction)

    if not index.is_trained:
        size = min(n, train_sample if train_sample is not None else default_train_size(index))
        ivf = faiss.try_extract_index_ivf(index)
        if size < 1 or (ivf is not None and size < ivf.nlist):
            raise ValueError(
                f"{factory!r} needs at least {ivf.nlist if ivf is not None else 1} training "
                f"rows, got {size} (n={n}, train_sample={train_sample})"
            )
        rng = np.random.default_rng(seed)
        # Sorted rows keep the sample's memory access sequential; order does not matter.
        rows = np.sort(rng.choice(n, size=size, replace=False))
        index.train(xb[rows])
    if not _supports_add_with_ids(index):
        index = faiss.IndexIDMap2(index)
    return index


def fill_index(index: faiss.Index, embeddings: npt.ArrayLike, ids: npt.ArrayLike) -> None:
    """Add `embeddings` `(n, d)` under `ids` `(n,)` to a trained index (no direct map
    yet: `finish_index` builds it once every vector is in, so parts added apart and merged
    give the same bytes as one add)."""
    xb = _as_matrix(embeddings, "embeddings")
    index.add_with_ids(xb, _as_ids(ids, len(xb)))


def finish_index(index: faiss.Index) -> None:
    """Give an IVF index its hashtable direct map (`reconstruct(id)`, cheap
    `remove_ids`), built from the inverted lists in list order."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        # faiss's bundled stubs omit DirectMap; it exists at runtime.
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]


def search(
    index: faiss.Index, queries: npt.ArrayLike, k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Top-k by inner product.

    Args:
        index: an index from `build_index`.
        queries: `(q, d)` query embeddings (use `x.reshape(1, -1)` for one query).
        k: results per query.

    Returns:
        `(scores, ids)`, each `(q, k)`, best first; scores `float32` inner products, ids
        `int64` real item IDs. Missing results (fewer than k found) are id -1, score -inf.
    """
    xq = _as_matrix(queries, "queries")
    if xq.shape[1] != index.d:
        raise ValueError(f"queries have dimension {xq.shape[1]}, the index has {index.d}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores, ids = index.search(xq, k)
    scores = np.asarray(scores, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    # Faiss pads with -FLT_MAX (or -inf) depending on the index; make it one value.
    scores[ids < 0] = -np.inf
    return scores, ids


def set_search_params(
    index: faiss.Index, *, nprobe: int | None = None, efSearch: int | None = None
) -> None:
    """Set query-time accuracy knobs, reaching through IDMap / PreTransform wrappers.

    Args:
        nprobe: IVF lists visited per query (more = higher recall, slower).
        efSearch: HNSW candidate list size per query (>= k for meaningful results).

    Raises:
        ValueError: a parameter the index does not have, or a value < 1.
    """
    given = {"nprobe": nprobe, "efSearch": efSearch}
    set_index_params(index, {name: v for name, v in given.items() if v is not None})


def set_index_params(index: faiss.Index, params: Mapping[str, float]) -> None:
    """Set any of Faiss's ``ParameterSpace`` query-time parameters by name (``nprobe``,
    ``efSearch``, ``k_factor_rf``, ...), reaching through wrappers; ValueError for one the
    index does not have or a value < 1."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        if float(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
        try:
            space.set_index_parameter(index, name, float(value))
        except RuntimeError as err:
            raise ValueError(f"cannot set {name} on {type(index).__name__}: {err}") from err


def configure_threads(n: int) -> int:
    """Set Faiss's OpenMP thread count (process-wide) and return the count read back.

    Torch loads its own OpenMP runtime, so its thread count is set separately.
    """
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    faiss.omp_set_num_threads(int(n))
    return int(faiss.omp_get_max_threads())


def tune_blas_threshold(d: int) -> int:
    """Route batched exact searches to BLAS while single queries keep the direct scan.

    Faiss compares `distance_compute_blas_threshold` with `nq * d`; the default 128,000
    sends a batch of 1,000 queries at d=64 down the scalar scan (6-10x slower than BLAS
    on 2 cores, docs/performance.md).
    `20 * d` switches to a GEMM from 20 queries on. Process-wide; returns the value set.
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    faiss.cvar.distance_compute_blas_threshold = 20 * int(d)
    return int(faiss.cvar.distance_compute_blas_threshold)


def index_metric_name(index: faiss.Index) -> str:
    """Name of the index's metric: "inner_product", "l2", or "faiss_metric_<n>"."""
    names = {faiss.METRIC_INNER_PRODUCT: "inner_product", faiss.METRIC_L2: "l2"}
    metric = int(index.metric_type)
    return names.get(metric, f"faiss_metric_{metric}")

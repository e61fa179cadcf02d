"""Ranking metrics beyond recall / NDCG / hit rate: per-user MRR and precision from a hit
matrix, and catalogue-level item coverage and popularity bias of the top-k lists.

Pure functions of ranked item rows (`-1` = empty slot); ``model.metrics`` calls them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "average_popularity",
    "beyond_accuracy_metrics",
    "check_item_popularity",
    "item_coverage",
    "precision_at_k",
    "reciprocal_rank",
]


def _check_k(arr: npt.NDArray[np.generic], k: int) -> None:
    if arr.ndim != 2 or k < 1 or k > arr.shape[1]:
        raise ValueError(f"cut-off k={k} needs a ranking at least k deep, got {arr.shape}")


def reciprocal_rank(hits: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.float64]:
    """`(n,) float64` reciprocal rank of each user's first hit within the top ``k``:
    `1 / (rank + 1)` for 0-based rank, 0 when no hit. ``hits``: `(n, K) bool`, `K >= k`."""
    _check_k(hits, k)
    top = hits[:, :k]
    first = np.argmax(top, axis=1)  # 0 both for a hit in slot 0 and for no hit at all
    return np.where(top.any(axis=1), 1.0 / (first + 1.0), 0.0)


def precision_at_k(hits: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.float64]:
    """`(n,) float64` hits in the top ``k`` divided by ``k`` (empty slots count as misses,
    so a user with fewer than ``k`` rankable items cannot reach 1)."""
    _check_k(hits, k)
    return hits[:, :k].sum(axis=1) / float(k)


def item_coverage(topk: npt.NDArray[np.int64], k: int, n_items: int) -> float:
    """Distinct items in any user's top ``k`` divided by ``n_items``.

    ``topk``: `(n, K) int64` item rows in `[0, n_items)`, `-1` for empty slots, `K >= k`.
    """
    _check_k(topk, k)
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}")
    top = topk[:, :k]
    shown = top[top >= 0]
    if shown.size and int(shown.max()) >= n_items:
        raise ValueError(f"topk holds item rows >= n_items={n_items}")
    return float(len(np.unique(shown)) / n_items)


def average_popularity(
    topk: npt.NDArray[np.int64], k: int, item_popularity: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """`(n,) float64` mean ``item_popularity`` of each user's top-``k`` items (empty slots
    skipped; NaN for a user with no filled slot).

    ``topk``: `(n, K) int64`, `-1` for empty slots; ``item_popularity``: `(n_items,)`,
    typically training-interaction counts.
    """
    _check_k(topk, k)
    top = topk[:, :k]
    filled = top >= 0
    pop = np.where(filled, item_popularity[np.where(filled, top, 0)], 0.0)
    n_filled = filled.sum(axis=1)
    total = pop.sum(axis=1)
    return np.divide(total, n_filled, out=np.full(len(top), np.nan), where=n_filled > 0)


def check_item_popularity(item_popularity: npt.ArrayLike, n_items: int) -> npt.NDArray[np.float64]:
    """`(n_items,) float64` copy of ``item_popularity``; ValueError unless finite,
    non-negative and not all zero."""
    pop = np.asarray(item_popularity, dtype=np.float64)
    if pop.shape != (n_items,):
        raise ValueError(f"item_popularity must be ({n_items},), got {pop.shape}")
    if not np.all(np.isfinite(pop)) or pop.min(initial=0.0) < 0 or pop.sum() <= 0:
        raise ValueError("item_popularity must be finite, non-negative and not all zero")
    return pop


def beyond_accuracy_metrics(
    topk: npt.NDArray[np.int64],
    ks: Sequence[int],
    n_items: int,
    item_popularity: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Catalogue-level metrics of the users' top-k lists at each cut-off.

    Args:
        topk: `(n, K) int64` ranked item rows of the evaluated users, `-1` for empty slots.
        ks: cut-offs, each `<= K`.
        n_items: catalogue size (the coverage denominator).
        item_popularity: `(n_items,)` training-interaction counts, or None.

    Returns:
        `{"coverage@k": ..}` for every k; with ``item_popularity`` also `"avg_pop@k"` (mean
        over users of the mean popularity of their top-k items) and `"avg_pop_norm@k"`
        (that divided by the catalogue's mean popularity: 1 = popularity-neutral, above 1 =
        biased towards popular items).
    """
    pop = None if item_popularity is None else check_item_popularity(item_popularity, n_items)
    out: dict[str, float] = {}
    for k in ks:
        out[f"coverage@{k}"] = item_coverage(topk, k, n_items)
    if pop is None:
        return out
    for k in ks:
        per_user = average_popularity(topk, k, pop)
        defined = per_user[~np.isnan(per_user)]
        avg = float(defined.mean()) if defined.size else float("nan")
        out[f"avg_pop@{k}"] = avg
        out[f"avg_pop_norm@{k}"] = avg / float(pop.mean())
    return out

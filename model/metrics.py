"""Full-ranking retrieval metrics: masked top-k and per-user ranking metrics.

Owns how every scorer (two-tower model, popularity baseline, oracle) is ranked: the
caller supplies full score rows for blocks of users, this module masks each user's
history, ranks all items and computes recall / NDCG / hit rate (plus MRR and precision
of ``model.ranking``) against held-out sets. ``model.fullrank`` puts these together into
one evaluation, whole or in user shards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from model.ranking import precision_at_k, reciprocal_rank
from model.sets import CsrSets
from model.side_by_side import run_batches
from model.threadgov import adaptive_loop

__all__ = [
    "DEFAULT_KS",
    "ScoreBlockFn",
    "UserMetrics",
    "check_ks",
    "check_user_rows",
    "full_ranking_topk",
    "hit_matrix",
    "per_user_metrics",
    "ranking_metrics",
]

DEFAULT_KS: tuple[int, ...] = (10, 50, 100)

# Maps user rows `(b,) int64` to a fresh score block `(b, n_items) float32`, higher = better.
ScoreBlockFn = Callable[[npt.NDArray[np.int64]], torch.Tensor | npt.NDArray[np.float32]]


@dataclass(frozen=True)
class UserMetrics:
    """Per-user metrics at one cut-off `k`; each field is `(n,) float64`, NaN where the user
    has no relevant item (undefined, so excluded from means)."""

    recall: npt.NDArray[np.float64]
    ndcg: npt.NDArray[np.float64]
    hit_rate: npt.NDArray[np.float64]


def check_user_rows(rows: npt.ArrayLike, sets: CsrSets, what: str) -> npt.NDArray[np.int64]:
    """``rows`` as `(n,) int64` rows of ``sets`` (named ``what`` in errors); ValueError
    unless a 1-D integer array within `[0, sets.n_rows)`."""
    arr = np.asarray(rows)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"user_rows must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= sets.n_rows):
        raise ValueError(f"user_rows must lie in [0, {sets.n_rows}) to index the {what} sets")
    return arr


def check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Cut-offs as a tuple of ints; ValueError unless distinct and positive."""
    out = tuple(int(k) for k in ks)
    if not out or min(out) < 1 or len(set(out)) != len(out):
        raise ValueError(f"ks must be distinct positive cut-offs, got {ks!r}")
    return out


def hit_matrix(
    topk: npt.NDArray[np.int64], user_rows: npt.ArrayLike, relevant: CsrSets
) -> npt.NDArray[np.bool_]:
    """Mark which ranked slots hold a relevant item.

    Args:
        topk: `(n, K) int64` item rows ranked best first; `-1` marks an empty slot.
        user_rows: `(n,)` rows of `relevant` that the rows of `topk` belong to.
        relevant: per-user relevant item sets.

    Returns:
        `(n, K) bool`, True where `topk[i, j]` is in `relevant` of `user_rows[i]`.
    """
    rows = check_user_rows(user_rows, relevant, "relevant")
    topk = np.asarray(topk)
    if topk.ndim != 2 or topk.shape[0] != len(rows):
        raise ValueError(
            f"topk must be (len(user_rows), K), got {topk.shape} for {len(rows)} users"
        )
    if topk.size and not np.issubdtype(topk.dtype, np.integer):
        raise ValueError(f"topk must hold integer item rows, got {topk.dtype}")
    topk = topk.astype(np.int64, copy=False)
    ordered = np.sort(topk, axis=1)
    if np.any((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)):
        raise ValueError("topk rows must not repeat an item (it would be counted twice)")
    local, items = relevant.gather(rows)
    if topk.size == 0 or items.size == 0:
        return np.zeros(topk.shape, dtype=bool)
    # Membership as one sorted search: key = position * span + item is globally sorted
    # because positions ascend and items are sorted within each position.
    span = int(max(topk.max(), items.max())) + 1
    if len(rows) * span >= 2**62:
        raise ValueError("too many users x items to encode membership keys in int64")
    keys = local * span + items
    queries = np.arange(len(rows), dtype=np.int64)[:, None] * span + topk
    pos = np.minimum(np.searchsorted(keys, queries), len(keys) - 1)
    return (keys[pos] == queries) & (topk >= 0)


def _discounts(n: int) -> npt.NDArray[np.float64]:
    # Rank r (0-based) is worth 1 / log2(r + 2): the top slot counts 1.
    return 1.0 / np.log2(np.arange(n, dtype=np.float64) + 2.0)


def per_user_metrics(
    hits: npt.NDArray[np.bool_], n_relevant: npt.NDArray[np.int64], k: int
) -> UserMetrics:
    """Recall, NDCG and hit rate at cut-off `k` for each user.

    Args:
        hits: `(n, K) bool` from `hit_matrix`, `K >= k`.
        n_relevant: `(n,)` size of each user's relevant set.
        k: cut-off.

    Recall is `hits in top k / |relevant|`, so it stays below 1 when `|relevant| > k`.
    NDCG uses binary gains, `DCG = sum 1 / log2(rank + 2)` over hit ranks (0-based), and
    `IDCG` over `min(k, |relevant|)` leading slots.
    """
    if hits.ndim != 2 or k < 1 or k > hits.shape[1]:
        raise ValueError(f"cut-off k={k} needs a ranking at least k deep, got {hits.shape}")
    n_rel = np.asarray(n_relevant, dtype=np.int64)
    if n_rel.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must be ({hits.shape[0]},), got {n_rel.shape}")
    top = hits[:, :k]
    n_hits = top.sum(axis=1).astype(np.float64)
    disc = _discounts(k)
    dcg = top.astype(np.float64) @ disc
    ideal = np.concatenate([[np.nan], np.cumsum(disc)])  # ideal[m] = IDCG with m hits
    defined = n_rel > 0
    denom = np.where(defined, n_rel, 1).astype(np.float64)
    nan = np.full(len(n_rel), np.nan)
    return UserMetrics(
        recall=np.where(defined, n_hits / denom, nan),
        ndcg=np.where(defined, dcg / ideal[np.minimum(n_rel, k)], nan),
        hit_rate=np.where(defined, (n_hits > 0).astype(np.float64), nan),
    )


def ranking_metrics(
    topk: npt.NDArray[np.int64],
    user_rows: npt.ArrayLike,
    relevant: CsrSets,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """Mean recall / NDCG / hit rate / MRR / precision at each cut-off over users with a
    relevant item.

    Args:
        topk: `(n, K) int64` ranked item rows, `-1` for empty slots, `K >= max(ks)`.
        user_rows: `(n,)` rows of `relevant` matching the rows of `topk`.
        relevant: per-user relevant (held-out) item sets.
        ks: cut-offs.

    Returns:
        `{"recall@k", "ndcg@k", "hit_rate@k", "mrr@k", "precision@k" for k in ks,
        "n_users": n_eval}` (see `model.ranking` for MRR and precision).
        Users with an empty relevant set are excluded from every mean and from `n_users`.
    """
    ks = check_ks(ks)
    rows = check_user_rows(user_rows, relevant, "relevant")
    hits = hit_matrix(topk, rows, relevant)
    n_rel = relevant.lengths()[rows]
    keep = n_rel > 0
    if not np.any(keep):
        raise ValueError("no user in user_rows has a relevant item: nothing to evaluate")
    hits, n_rel = hits[keep], n_rel[keep]
    out: dict[str, float] = {}
    for k in ks:
        m = per_user_metrics(hits, n_rel, k)
        out[f"recall@{k}"] = float(m.recall.mean())
        out[f"ndcg@{k}"] = float(m.ndcg.mean())
        out[f"hit_rate@{k}"] = float(m.hit_rate.mean())
        out[f"mrr@{k}"] = float(reciprocal_rank(hits, k).mean())
        out[f"precision@{k}"] = float(precision_at_k(hits, k).mean())
    out["n_users"] = int(keep.sum())
    return out


def _as_block(raw: torch.Tensor | npt.NDArray[np.float32], shape: tuple[int, int]) -> torch.Tensor:
    # The block is masked in place; only copy when the scorer's output cannot be written
    # (read-only or broadcast numpy arrays, expanded views) or has the wrong dtype.
    if isinstance(raw, np.ndarray):
        arr = raw
        if arr.dtype != np.float32 or not arr.flags.c_contiguous or not arr.flags.writeable:
            arr = np.array(arr, dtype=np.float32, order="C")
        block = torch.from_numpy(arr)
    else:
        block = raw.detach().to(device="cpu", dtype=torch.float32)
        if not block.is_contiguous():
            block = block.contiguous()
    if tuple(block.shape) != shape:
        raise ValueError(f"score_block_fn returned shape {tuple(block.shape)}, expected {shape}")
    return block


def _topk_lowest_index_ties(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of `(b, n)` NaN-free scores, `k <= n`, ties broken by lower item row.

    torch.topk picks arbitrarily among tied scores, which would make results depend on the
    block size; popularity scores tie a lot, so the boundary is resolved explicitly.
    Returns `(values, indices)`, each `(b, k)`, sorted by score desc then item row asc.
    """
    n = scores.shape[1]
    # One extra slot tells whether a tie straddles the boundary without another pass.
    vals, idx = torch.topk(scores, min(k + 1, n), dim=1, largest=True, sorted=True)
    if torch.isnan(vals[:, 0]).any():  # topk ranks NaN above everything
        raise ValueError("score_block_fn returned NaN scores; ranks would be meaningless")
    if vals.shape[1] > k:
        ambiguous = vals[:, k] == vals[:, k - 1]
        vals, idx = vals[:, :k].contiguous(), idx[:, :k].contiguous()
    else:
        ambiguous = torch.zeros(scores.shape[0], dtype=torch.bool)
    # Only rows where a tie straddles the boundary need fixing. Scores above the k-th are
    # all in torch's pick already; the tied slots go to the lowest tied item rows. The loop
    # runs over those rows only, each a single vectorised scan of its scores (a full-block
    # integer tie key measured several times slower here).
    scores_np, vals_np, idx_np = scores.numpy(), vals.numpy(), idx.numpy()
    for row in np.flatnonzero(ambiguous.numpy()):
        kth = vals_np[row, k - 1]
        n_above = int((vals_np[row] > kth).sum())  # vals are sorted: these lead the row
        idx_np[row, n_above:] = np.flatnonzero(scores_np[row] == kth)[: k - n_above]
    # Stable two-pass sort: item row asc, then score desc keeps row order within ties.
    by_row = torch.sort(idx, dim=1, stable=True)
    idx, vals = by_row.values, vals.gather(1, by_row.indices)
    by_score = torch.sort(vals, dim=1, descending=True, stable=True)
    return by_score.values, idx.gather(1, by_score.indices)


def full_ranking_topk(
    score_block_fn: ScoreBlockFn,
    user_rows: npt.ArrayLike,
    n_items: int,
    exclude: CsrSets,
    k: int,
    block_users: int = 1024,
) -> npt.NDArray[np.int64]:
    """Rank all items for each user, skipping the user's excluded items, and keep the top k.

    Args:
        score_block_fn: maps `(b,) int64` user rows to a fresh `(b, n_items) float32` score
            block (torch or numpy); it is masked in place, so do not return cached storage.
        user_rows: `(n,)` user rows to rank for; also the rows of `exclude` used.
        n_items: number of item rows scored.
        exclude: per-user items that must never be ranked (e.g. training history).
        k: ranking depth.
        block_users: users per block; peak memory is about `block_users * n_items * 4`
            bytes (one score block, masked in place) plus torch.topk's workspace. While
            the cores are shared (the thread governor under its ceiling), blocks of a
            fraction of the size run side by side (``model.side_by_side``), in the same
            memory; score_block_fn must then be safe to call from several threads.

    Returns:
        `(n, k) int64` item rows, best first, ties by lower item row. Slots with score
        `-inf` (excluded or unscorable) and slots beyond `n_items` are `-1`.
    """
    rows = check_user_rows(user_rows, exclude, "exclude")
    if k < 1 or n_items < 1 or block_users < 1:
        raise ValueError(f"need k, n_items, block_users >= 1, got {k}, {n_items}, {block_users}")
    if exclude.nnz and int(exclude.indices.max()) >= n_items:
        raise ValueError(f"exclude holds item rows >= n_items={n_items}")
    depth = min(k, n_items)
    out = np.full((len(rows), k), -1, dtype=np.int64)

    def rank(lo: int, hi: int) -> None:
        block_rows = rows[lo:hi]
        scores = _as_block(score_block_fn(block_rows), (len(block_rows), n_items))
        local, items = exclude.gather(block_rows)
        scores[torch.from_numpy(local), torch.from_numpy(items)] = float("-inf")
        vals, idx = _topk_lowest_index_ties(scores, depth)
        idx[torch.isneginf(vals)] = -1
        out[lo:hi, :depth] = idx.numpy()

    with torch.no_grad():
        # CPU thread count per block (model.threadgov); on shared cores, smaller blocks
        # side by side in the memory of one.
        run_batches(rank, len(rows), block_users, adaptive_loop(), shrink=True)
    return out

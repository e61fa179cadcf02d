"""Full-ranking evaluation (``evaluate_ranking``), whole or in parts: each user shard
ranks its own users and keeps per-user metric values; ``merge_parts`` turns any number
of parts into the metrics of the whole.

Why per-user values rather than per-shard means: a mean of shard means weights users
unevenly, and even per-shard sums would make the result depend on how users were split
(float addition is not associative). Concatenating the per-user values in user order and
taking the same means as one pass gives bit-for-bit the figures of an unsplit evaluation,
so a run sharded over workers publishes the same metrics as one process. Coverage merges
exactly as the union of the items each part showed. The values are `(n,) float64` per
metric: about 200 bytes per user, which shards hand over as files, never as live objects.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from model.fast_rank import SharedScores, VectorScores, shared_topk, vector_topk
from model.metrics import (
    DEFAULT_KS,
    ScoreBlockFn,
    check_ks,
    check_user_rows,
    full_ranking_topk,
    hit_matrix,
    per_user_metrics,
)
from model.ranking import (
    average_popularity,
    check_item_popularity,
    precision_at_k,
    reciprocal_rank,
)
from model.sets import CsrSets

__all__ = [
    "RankingPart",
    "evaluate_ranking",
    "merge_parts",
    "part_from_topk",
    "part_keys",
    "rank_part",
]

logger = logging.getLogger(__name__)

# Per-user metrics kept at each cut-off, in the order ``evaluate_ranking`` reports them.
_PER_K = ("recall", "ndcg", "hit_rate", "mrr", "precision")


def part_keys(ks: Sequence[int], with_popularity: bool) -> list[str]:
    """The keys of ``RankingPart.values`` at cut-offs ``ks`` (``avg_pop@k`` too when parts
    are ranked with item popularity), in the order ``part_from_topk`` fills them."""
    keys = [f"{name}@{k}" for k in ks for name in _PER_K]
    return keys + [f"avg_pop@{k}" for k in ks] if with_popularity else keys


@dataclass(frozen=True)
class RankingPart:
    """One user shard's evaluation.

    Attributes:
        values: `{"recall@10": (n,) float64, ...}`, one value per evaluated user (all have
            a relevant item), in the shard's user order; `avg_pop@k` is NaN for a user with
            no ranked item.
        covered: `{k: (m,) int64}` sorted distinct item rows in any of the shard's top-k.
    """

    values: dict[str, npt.NDArray[np.float64]]
    covered: dict[int, npt.NDArray[np.int64]]

    @property
    def n_users(self) -> int:
        """Users evaluated in this part."""
        return len(next(iter(self.values.values()))) if self.values else 0


def part_from_topk(
    topk: npt.NDArray[np.int64],
    user_rows: npt.NDArray[np.int64],
    relevant: CsrSets,
    ks: Sequence[int],
    item_popularity: npt.NDArray[np.float64] | None = None,
) -> RankingPart:
    """Per-user values of ranked lists. ``topk``: `(n, K) int64` (`-1` = empty slot,
    `K >= max(ks)`) for ``user_rows`` `(n,)`, each with a non-empty relevant set."""
    hits = hit_matrix(topk, user_rows, relevant)
    n_rel = relevant.lengths()[user_rows]
    if np.any(n_rel == 0):
        raise ValueError("every user of a part must have a relevant item")
    values: dict[str, npt.NDArray[np.float64]] = {}
    for k in ks:
        m = per_user_metrics(hits, n_rel, k)
        values[f"recall@{k}"] = m.recall
        values[f"ndcg@{k}"] = m.ndcg
        values[f"hit_rate@{k}"] = m.hit_rate
        values[f"mrr@{k}"] = reciprocal_rank(hits, k)
        values[f"precision@{k}"] = precision_at_k(hits, k)
        if item_popularity is not None:
            values[f"avg_pop@{k}"] = average_popularity(topk, k, item_popularity)
    covered = {}
    for k in ks:
        top = topk[:, :k]
        covered[int(k)] = np.unique(top[top >= 0]).astype(np.int64)
    return RankingPart(values, covered)


def rank_part(
    score_block_fn: ScoreBlockFn,
    user_rows: npt.NDArray[np.int64],
    n_items: int,
    relevant: CsrSets,
    exclude: CsrSets,
    ks: Sequence[int],
    block_users: int = 1024,
    item_popularity: npt.NDArray[np.float64] | None = None,
) -> RankingPart:
    """Rank every item for ``user_rows`` (each with a relevant item), masking ``exclude``,
    and keep per-user values at ``ks`` (see ``evaluate_ranking``). Inner-product and
    shared-row scorers (``model.fast_rank``) are ranked without dense score blocks.

    A shard whose first user sits at a multiple of ``block_users`` in the whole list scores
    exactly the blocks an unsplit run scores, so its top-k lists are bit-for-bit the same
    (the fast paths give the same lists however the users are split). That holds at a
    fixed thread count: on shared cores the governor runs smaller blocks side by side.
    """
    k = max(ks)
    if isinstance(score_block_fn, VectorScores):
        topk = vector_topk(score_block_fn, user_rows, n_items, exclude, k)
    elif isinstance(score_block_fn, SharedScores):
        topk = shared_topk(score_block_fn, user_rows, n_items, exclude, k)
    else:
        topk = full_ranking_topk(score_block_fn, user_rows, n_items, exclude, k, block_users)
    return part_from_topk(topk, user_rows, relevant, ks, item_popularity)


def merge_parts(
    parts: Sequence[RankingPart],
    n_items: int,
    ks: Sequence[int],
    item_popularity: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """The metrics of all ``parts`` together, as one unsplit evaluation reports them:
    recall / NDCG / hit rate / MRR / precision at each k (means over users), then
    `coverage@k`, then (with ``item_popularity``) `avg_pop@k` and `avg_pop_norm@k`, then
    `n_users`. Parts are taken in the order given (the users' order)."""
    total = sum(p.n_users for p in parts)
    if total == 0:
        raise ValueError("no user in any part has a relevant item: nothing to evaluate")

    def joined(key: str) -> npt.NDArray[np.float64]:
        return np.concatenate([p.values[key] for p in parts if p.n_users])

    out: dict[str, float] = {}
    for k in ks:
        for name in _PER_K:
            out[f"{name}@{k}"] = float(joined(f"{name}@{k}").mean())
    for k in ks:
        shown = np.unique(np.concatenate([p.covered[int(k)] for p in parts]))
        out[f"coverage@{k}"] = float(len(shown) / n_items)
    if item_popularity is not None:
        pop = check_item_popularity(item_popularity, n_items)
        for k in ks:
            per_user = joined(f"avg_pop@{k}")
            defined = per_user[~np.isnan(per_user)]
            avg = float(defined.mean()) if defined.size else float("nan")
            out[f"avg_pop@{k}"] = avg
            out[f"avg_pop_norm@{k}"] = avg / float(pop.mean())
    out["n_users"] = total
    return out


def evaluate_ranking(
    score_block_fn: ScoreBlockFn,
    user_rows: npt.ArrayLike,
    n_items: int,
    relevant: CsrSets,
    exclude: CsrSets,
    ks: Sequence[int] = DEFAULT_KS,
    block_users: int = 1024,
    item_popularity: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Full-ranking evaluation of one scorer: masked top-`max(ks)`, `ranking_metrics` and
    the catalogue metrics of `model.ranking.beyond_accuracy_metrics`.

    Args:
        score_block_fn: see `full_ranking_topk`.
        user_rows: `(n,)` candidate user rows; those with an empty relevant set are
            dropped before scoring (they cannot be measured).
        n_items: number of item rows scored.
        relevant: held-out items per user row.
        exclude: items masked per user row (history seen at training time).
        ks: cut-offs.
        block_users: users scored per block.
        item_popularity: `(n_items,)` training-interaction counts; adds `avg_pop@k` and
            `avg_pop_norm@k`.

    Returns:
        The `ranking_metrics` dict plus `coverage@k` (and the popularity keys), `n_users`
        evaluated last.
    """
    ks = check_ks(ks)
    rows = check_user_rows(user_rows, relevant, "relevant")
    if relevant.nnz and int(relevant.indices.max()) >= n_items:
        raise ValueError(f"relevant holds item rows >= n_items={n_items}")
    rows = rows[relevant.lengths()[rows] > 0]
    if len(rows) == 0:
        raise ValueError("no user in user_rows has a relevant item: nothing to evaluate")
    # checked before the costly ranking
    pop = None if item_popularity is None else check_item_popularity(item_popularity, n_items)
    started = time.perf_counter()
    part = rank_part(score_block_fn, rows, n_items, relevant, exclude, ks, block_users, pop)
    metrics = merge_parts([part], n_items, ks, pop)
    logger.debug(
        "evaluated %d users over %d items in %.2f s: %s",
        len(rows),
        n_items,
        time.perf_counter() - started,
        ", ".join(f"{name}={value:.4f}" for name, value in metrics.items() if "@" in name),
    )
    return metrics

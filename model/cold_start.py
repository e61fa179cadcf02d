"""Cold-start evaluation: how well items nobody interacted with in training are ranked
for the users who take them at test time, from content features alone.

New items are those with no training interaction and at least one test interaction (on
synthetic data, the generator's held-back items; on real data, whatever appeared late).
Every ranker scores only the new items, so the question is "among the new arrivals, which
ones will this user take", next to two baselines: uniform random (its expected Recall@K is
K / n_new) and category popularity (a new item scores as many training interactions as
its category has; the personalised variant counts only the user's own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import torch

from model.fullrank import evaluate_ranking
from model.sets import CsrSets

__all__ = [
    "ColdStart",
    "NewItemScores",
    "category_popularity",
    "cold_start_items",
    "cold_start_metrics",
    "user_category_affinity",
]

# (b,) user positions -> (b, n_new) scores of the new items, higher = better.
NewItemScores = Callable[[npt.NDArray[np.int64]], torch.Tensor | npt.NDArray[np.float32]]

ColdStart = dict[str, object]


def cold_start_items(
    inter_item: npt.NDArray[np.int64],
    train: npt.NDArray[np.bool_],
    test: npt.NDArray[np.bool_],
    n_items: int,
) -> npt.NDArray[np.int64]:
    """(n_new,) sorted positions of items with no training and some test interaction."""
    in_train = np.bincount(inter_item[train], minlength=n_items) > 0
    in_test = np.bincount(inter_item[test], minlength=n_items) > 0
    return np.flatnonzero(in_test & ~in_train)


def _restrict(
    users: npt.NDArray[np.int64],
    items: npt.NDArray[np.int64],
    new: npt.NDArray[np.int64],
    n_users: int,
    n_items: int,
) -> CsrSets:
    """Per-user sets of interactions with new items, items renumbered 0..n_new-1."""
    local = np.full(n_items, -1, np.int64)
    local[new] = np.arange(len(new))
    keep = local[items] >= 0
    return CsrSets.from_pairs(users[keep], local[items[keep]], n_users)


def cold_start_metrics(
    scorers: dict[str, NewItemScores],
    inter_user: npt.NDArray[np.int64],
    inter_item: npt.NDArray[np.int64],
    test: npt.NDArray[np.bool_],
    new_items: npt.NDArray[np.int64],
    n_users: int,
    n_items: int,
    ks: Sequence[int],
) -> ColdStart | None:
    """Recall / NDCG / HitRate @ ``ks`` (each capped at the number of new items) of every
    scorer over the new items, for the users with a test interaction on one of them; their
    earlier interactions with new items (e.g. in validation) are masked. None when there
    are no new items or no such user."""
    if len(new_items) == 0:
        return None
    relevant = _restrict(inter_user[test], inter_item[test], new_items, n_users, n_items)
    exclude = _restrict(inter_user[~test], inter_item[~test], new_items, n_users, n_items)
    users = np.flatnonzero(relevant.lengths() > 0)
    if len(users) == 0:
        return None
    ks_new = tuple(sorted({min(k, len(new_items)) for k in ks}))
    rankers = {
        name: evaluate_ranking(fn, users, len(new_items), relevant, exclude, ks=ks_new)
        for name, fn in scorers.items()
    }
    return {"n_items": len(new_items), "n_users": len(users), "rankers": rankers}


def category_popularity(
    category: npt.NDArray[np.int64],
    inter_item: npt.NDArray[np.int64],
    train: npt.NDArray[np.bool_],
    new_items: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32]:
    """(n_new,) training interactions of each new item's category (all users)."""
    counts = np.bincount(category[inter_item[train]], minlength=int(category.max()) + 1)
    return counts[category[new_items]].astype(np.float32)


def user_category_affinity(
    category: npt.NDArray[np.int64],
    inter_user: npt.NDArray[np.int64],
    inter_item: npt.NDArray[np.int64],
    known: npt.NDArray[np.bool_],
    new_items: npt.NDArray[np.int64],
    n_users: int,
) -> Callable[[npt.NDArray[np.int64]], npt.NDArray[np.float32]]:
    """Scores (b, n_new): how often each user took the new item's category among the
    ``known`` interactions, ties broken by the category's overall popularity."""
    n_cat = int(category.max()) + 1
    per_user = np.zeros((n_users, n_cat), np.float32)
    np.add.at(per_user, (inter_user[known], category[inter_item[known]]), 1.0)
    overall = per_user.sum(axis=0)
    tiebreak = overall / max(float(overall.max()), 1.0) * 1e-3
    cats = category[new_items]

    def score(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return per_user[rows][:, cats] + tiebreak[cats]

    return score

"""The fast ranking paths return exactly what the dense path returns: same items, same
order, ties by lower item row, excluded items never, -1 past the end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.fast_rank import SharedScores, VectorScores, shared_topk, vector_topk
from model.fullrank import evaluate_ranking
from model.metrics import full_ranking_topk
from model.sets import CsrSets


def _exclude(rng: np.random.Generator, n_users: int, n_items: int, most: int) -> CsrSets:
    users, items = [], []
    for u in range(n_users):
        size = int(rng.integers(0, most + 1))
        users += [u] * size
        items += list(rng.choice(n_items, size, replace=False))
    return CsrSets.from_pairs(np.array(users, np.int64), np.array(items, np.int64), n_users)


def _dense(scores: VectorScores | SharedScores, rows: np.ndarray, n: int, ex: CsrSets, k: int):
    # A plain lambda, so full_ranking_topk cannot take a fast path by type.
    return full_ranking_topk(lambda r: scores(r), rows, n, ex, k, block_users=7)


def test_vector_topk_equals_dense_ranking_with_ties_and_exclusions() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items, k = 40, 500, 20
    # Small integer vectors: every inner product is exact in float32 whatever the
    # summation order, and many scores tie, also at the top-k boundary.
    users = rng.integers(-2, 3, (n_users, 4)).astype(np.float32)
    items = rng.integers(-2, 3, (n_items, 4)).astype(np.float32)
    scores = VectorScores(users, items)
    ex = _exclude(rng, n_users, n_items, 60)
    rows = np.arange(n_users, dtype=np.int64)
    fast = vector_topk(scores, rows, n_items, ex, k)
    np.testing.assert_array_equal(fast, _dense(scores, rows, n_items, ex, k))
    assert (fast >= 0).all()
    for r in rows:  # never an excluded item
        assert not np.isin(fast[r], ex.row(int(r))).any()


def test_vector_topk_on_learned_like_vectors_equals_dense() -> None:
    rng = np.random.default_rng(1)
    users = rng.standard_normal((300, 16)).astype(np.float32)
    items = rng.standard_normal((3000, 16)).astype(np.float32)
    scores = VectorScores(users, items)
    ex = _exclude(rng, 300, 3000, 200)
    rows = np.sort(rng.choice(300, 120, replace=False)).astype(np.int64)
    fast = vector_topk(scores, rows, 3000, ex, 50)
    dense = _dense(scores, rows, 3000, ex, 50)
    # Faiss and numpy may round a product differently in the last bit: at most a swap of
    # two near-equal neighbours, never a different set beyond that.
    assert (fast == dense).mean() > 0.99


def test_vector_topk_lists_do_not_depend_on_how_users_are_split() -> None:
    """Sharded evaluation cuts users anywhere: each user's list must be the same."""
    rng = np.random.default_rng(5)
    users = rng.standard_normal((3000, 32)).astype(np.float32)
    items = rng.standard_normal((5000, 32)).astype(np.float32)
    scores = VectorScores(users, items)
    ex = _exclude(rng, 3000, 5000, 50)
    rows = np.arange(3000, dtype=np.int64)
    whole = vector_topk(scores, rows, 5000, ex, 100)
    for cut in (1, 777, 1024, 2500):
        parts = [vector_topk(scores, rows[:cut], 5000, ex, 100)]
        parts.append(vector_topk(scores, rows[cut:], 5000, ex, 100))
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_vector_topk_shorter_catalogue_than_k_pads_with_minus_one() -> None:
    rng = np.random.default_rng(2)
    scores = VectorScores.of(torch.randn(5, 3), torch.randn(8, 3))
    ex = _exclude(rng, 5, 8, 3)
    rows = np.arange(5, dtype=np.int64)
    fast = vector_topk(scores, rows, 8, ex, 12)
    np.testing.assert_array_equal(fast, _dense(scores, rows, 8, ex, 12))
    assert (fast[:, 8:] == -1).all()
    assert ((fast >= 0).sum(1) == 8 - ex.lengths()).all()


def test_shared_topk_equals_dense_ranking_with_ties() -> None:
    rng = np.random.default_rng(3)
    pop = rng.integers(0, 6, 400).astype(np.float32)  # heavy ties, as popularity counts have
    pop[[5, 9]] = -np.inf  # unscorable items are never ranked
    scores = SharedScores(pop)
    ex = _exclude(rng, 30, 400, 80)
    rows = np.arange(30, dtype=np.int64)[::-1].copy()
    fast = shared_topk(scores, rows, 400, ex, 25)
    np.testing.assert_array_equal(fast, _dense(scores, rows, 400, ex, 25))
    small = shared_topk(SharedScores(pop[:10]), rows, 10, _exclude(rng, 30, 10, 4), 12)
    np.testing.assert_array_equal(small[:, 8:], -1)


def test_evaluate_ranking_takes_the_fast_paths_with_the_same_metrics() -> None:
    rng = np.random.default_rng(4)
    n_users, n_items = 200, 800
    users = rng.integers(-3, 4, (n_users, 6)).astype(np.float32)
    items = rng.integers(-3, 4, (n_items, 6)).astype(np.float32)
    relevant = _exclude(rng, n_users, n_items, 5)
    exclude = _exclude(rng, n_users, n_items, 30)
    rows = np.arange(n_users, dtype=np.int64)
    for scorer in (VectorScores(users, items), SharedScores(items[:, 0].copy())):
        fast = evaluate_ranking(scorer, rows, n_items, relevant, exclude, ks=(10, 50))
        dense = evaluate_ranking(
            lambda r, s=scorer: s(r), rows, n_items, relevant, exclude, (10, 50)
        )
        assert fast == dense


def test_bad_vectors_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        VectorScores(np.full((2, 3), np.nan, np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="dims"):
        VectorScores(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="float32"):
        VectorScores(np.zeros((2, 3)), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        SharedScores(np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="cover 4 items"):
        vector_topk(
            VectorScores(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32)),
            np.arange(2), 5, CsrSets.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), 2),
            3,
        )  # fmt: skip


def test_vector_topk_groups_users_by_exclusions_and_keeps_the_callers_order() -> None:
    """Users are ranked in order of how many items they exclude, in groups whose width
    at most doubles; the lists come back in the caller's order, equal to the dense ones
    (exact integer scores, ties included)."""
    from model.fast_rank import _width_groups

    rng = np.random.default_rng(9)
    n_users, n_items, k = 60, 900, 10
    users = rng.integers(-2, 3, (n_users, 4)).astype(np.float32)
    items = rng.integers(-2, 3, (n_items, 4)).astype(np.float32)
    sizes = np.r_[np.zeros(20, np.int64), rng.integers(1, 40, 30), rng.integers(300, 700, 10)]
    pairs = [(u, i) for u in range(n_users) for i in rng.choice(n_items, sizes[u], replace=False)]
    ex = CsrSets.from_pairs(np.array([p[0] for p in pairs], np.int64),
                            np.array([p[1] for p in pairs], np.int64), n_users)  # fmt: skip
    rows = rng.permutation(n_users).astype(np.int64)  # not sorted by anything
    scores = VectorScores(users, items)
    fast = vector_topk(scores, rows, n_items, ex, k)
    np.testing.assert_array_equal(fast, _dense(scores, rows, n_items, ex, k))
    groups = _width_groups(np.sort(sizes), k + 1 + 32)
    assert len(groups) > 2 and groups[0][0] == 0 and groups[-1][1] == n_users
    for start, end in groups:  # each group's widths within a factor of two
        widths = k + 1 + 32 + np.sort(sizes)[start:end]
        assert widths.max() <= 2 * widths.min()

"""Full-ranking metrics: hand-computed cases, masking, ties and block-size invariance."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
import torch

from model import metrics
from model.fullrank import evaluate_ranking
from model.metrics import (
    full_ranking_topk,
    hit_matrix,
    per_user_metrics,
    ranking_metrics,
)
from model.sets import CsrSets


def _sets(rows: list[list[int]]) -> CsrSets:
    users = [u for u, items in enumerate(rows) for _ in items]
    items = [i for r in rows for i in r]
    return CsrSets.from_pairs(np.array(users, np.int64), np.array(items, np.int64), len(rows))


def _fixed_scorer(table: npt.NDArray[np.float32]) -> metrics.ScoreBlockFn:
    def score(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return table[rows].copy()

    return score


def test_from_pairs_sorts_and_deduplicates() -> None:
    sets = CsrSets.from_pairs(np.array([2, 0, 2, 2, 0]), np.array([5, 1, 3, 5, 1]), 4)
    assert sets.indptr.tolist() == [0, 1, 1, 3, 3]
    assert sets.indices.tolist() == [1, 3, 5]
    assert sets.row(2).tolist() == [3, 5]
    assert sets.lengths().tolist() == [1, 0, 2, 0]


def test_from_pairs_matches_python_sets_and_survives_huge_item_rows() -> None:
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 50, 5_000), rng.integers(0, 300, 5_000)
    sets = CsrSets.from_pairs(users, items, 60)
    for u in range(60):
        assert sets.row(u).tolist() == sorted(set(items[users == u].tolist()))
    # Rows so large that one int64 key per pair would overflow: the two-key sort path.
    big = np.array([2**62, 5, 2**62, 7], np.int64)
    huge = CsrSets.from_pairs(np.array([1, 1, 1, 0]), big, 3)
    assert [huge.row(u).tolist() for u in range(3)] == [[7], [5, 2**62], []]


@pytest.mark.parametrize(
    ("users", "items", "n_users"),
    [([0, 3], [1, 1], 3), ([-1], [0], 2), ([0], [-2], 1), ([0, 1], [1], 2)],
)
def test_from_pairs_rejects_bad_pairs(users: list[int], items: list[int], n_users: int) -> None:
    with pytest.raises(ValueError):
        CsrSets.from_pairs(np.array(users), np.array(items), n_users)


def test_csr_rejects_unsorted_rows() -> None:
    with pytest.raises(ValueError, match="sorted"):
        CsrSets(np.array([0, 2], np.int64), np.array([3, 1], np.int64))
    # A step down across a row boundary is fine.
    CsrSets(np.array([0, 1, 2], np.int64), np.array([3, 1], np.int64))


def test_hand_computed_single_user() -> None:
    # Relevant {1, 3}; ranking [3, 0, 1] -> hits at ranks 0 and 2.
    relevant = _sets([[1, 3]])
    topk = np.array([[3, 0, 1]], np.int64)
    hits = hit_matrix(topk, np.array([0]), relevant)
    assert hits.tolist() == [[True, False, True]]
    n_rel = relevant.lengths()
    at1 = per_user_metrics(hits, n_rel, 1)
    at3 = per_user_metrics(hits, n_rel, 3)
    # recall@1 = 1 hit / 2 relevant; recall@3 = 2 / 2.
    assert at1.recall.tolist() == [0.5]
    assert at3.recall.tolist() == [1.0]
    # ndcg@1: DCG = 1/log2(2) = 1, IDCG over min(1, 2) = 1 slot = 1.
    assert at1.ndcg.tolist() == [1.0]
    # ndcg@3: DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1/log2(2) + 1/log2(3).
    expected = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert at3.ndcg[0] == pytest.approx(expected)
    assert at1.hit_rate.tolist() == [1.0]


def test_ranking_metrics_means_and_excludes_empty_users() -> None:
    # User 0: relevant {1, 3}, ranked [3, 0, 1]  (as above).
    # User 1: no relevant items -> excluded, whatever its ranking.
    # User 2: relevant {2}, ranked [0, 1, 2]: hit at rank 2 only.
    relevant = _sets([[1, 3], [], [2]])
    topk = np.array([[3, 0, 1], [2, 1, 0], [0, 1, 2]], np.int64)
    got = ranking_metrics(topk, np.array([0, 1, 2]), relevant, ks=(1, 3))
    assert got["n_users"] == 2
    # recall@1 = mean(0.5, 0) ; recall@3 = mean(1, 1)
    assert got["recall@1"] == pytest.approx(0.25)
    assert got["recall@3"] == pytest.approx(1.0)
    # hit@1 = mean(1, 0) ; hit@3 = mean(1, 1)
    assert got["hit_rate@1"] == pytest.approx(0.5)
    assert got["hit_rate@3"] == pytest.approx(1.0)
    # ndcg@3 user 2: DCG = 1/log2(4) = 0.5, IDCG = 1 -> 0.5.
    user0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert got["ndcg@3"] == pytest.approx((user0 + 0.5) / 2)
    # MRR: user 0 hits at rank 0, user 2 first at rank 2 -> @1 mean(1, 0), @3 mean(1, 1/3).
    assert got["mrr@1"] == pytest.approx(0.5)
    assert got["mrr@3"] == pytest.approx((1 + 1 / 3) / 2)
    # Precision@3: 2 of 3 slots for user 0, 1 of 3 for user 2.
    assert got["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert list(got) == [
        "recall@1",
        "ndcg@1",
        "hit_rate@1",
        "mrr@1",
        "precision@1",
        "recall@3",
        "ndcg@3",
        "hit_rate@3",
        "mrr@3",
        "precision@3",
        "n_users",
    ]


def test_recall_caps_below_one_when_relevant_exceeds_k() -> None:
    # 4 relevant, all 2 slots hit: recall@2 = 2/4; ndcg@2 = 1 (IDCG over min(2, 4) slots).
    relevant = _sets([[0, 1, 2, 3]])
    got = ranking_metrics(np.array([[0, 1]], np.int64), np.array([0]), relevant, ks=(2,))
    assert got["recall@2"] == pytest.approx(0.5)
    assert got["ndcg@2"] == pytest.approx(1.0)


def test_empty_slots_are_not_hits_and_repeats_rejected() -> None:
    relevant = _sets([[0]])
    assert hit_matrix(np.array([[-1, 0]]), np.array([0]), relevant).tolist() == [[False, True]]
    with pytest.raises(ValueError, match="repeat"):
        hit_matrix(np.array([[0, 0]]), np.array([0]), relevant)
    with pytest.raises(ValueError, match="deep"):
        ranking_metrics(np.array([[0, 1]]), np.array([0]), relevant, ks=(3,))
    with pytest.raises(ValueError, match="nothing to evaluate"):
        ranking_metrics(np.array([[0]]), np.array([0]), _sets([[]]), ks=(1,))


def test_excluded_item_never_ranked_even_when_best() -> None:
    scores = np.array([[9.0, 1.0, 2.0, 3.0], [0.0, 5.0, 4.0, 3.0]], np.float32)
    exclude = _sets([[0, 3], [1]])
    topk = full_ranking_topk(_fixed_scorer(scores), np.array([0, 1]), 4, exclude, k=4)
    # User 0: items 0 and 3 masked -> [2, 1] then two empty slots.
    # User 1: item 1 masked -> [2, 3, 0] then one empty slot.
    assert topk.tolist() == [[2, 1, -1, -1], [2, 3, 0, -1]]


def test_neg_inf_scores_become_empty_slots_and_k_beyond_items_pads() -> None:
    scores = np.array([[1.0, -np.inf, 0.5]], np.float32)
    topk = full_ranking_topk(_fixed_scorer(scores), np.array([0]), 3, _sets([[]]), k=5)
    assert topk.tolist() == [[0, 2, -1, -1, -1]]


def test_ties_break_to_lower_item_row() -> None:
    # Items 1, 3, 4, 6 tie at 2.0 above item 0 (1.0); k=3 keeps the lowest tied rows.
    scores = np.array([[1.0, 2.0, 0.0, 2.0, 2.0, 0.0, 2.0, 3.0]], np.float32)
    topk = full_ranking_topk(_fixed_scorer(scores), np.array([0]), 8, _sets([[]]), k=3)
    assert topk.tolist() == [[7, 1, 3]]
    # With item 1 masked the next tied row moves up.
    topk = full_ranking_topk(_fixed_scorer(scores), np.array([0]), 8, _sets([[1]]), k=3)
    assert topk.tolist() == [[7, 3, 4]]


def test_nan_scores_and_wrong_shapes_rejected() -> None:
    scores = np.array([[np.nan, 1.0]], np.float32)
    with pytest.raises(ValueError, match="NaN"):
        full_ranking_topk(_fixed_scorer(scores), np.array([0]), 2, _sets([[]]), k=1)
    with pytest.raises(ValueError, match="shape"):
        full_ranking_topk(_fixed_scorer(scores), np.array([0]), 3, _sets([[]]), k=1)
    with pytest.raises(ValueError, match="n_items"):
        full_ranking_topk(_fixed_scorer(scores), np.array([0]), 2, _sets([[5]]), k=1)


def test_block_size_does_not_change_results() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 37, 60
    # Rounded scores force many ties, the case where torch.topk alone is arbitrary.
    table = np.round(rng.random((n_users, n_items)) * 4).astype(np.float32)
    exclude = CsrSets.from_pairs(
        rng.integers(0, n_users, 300), rng.integers(0, n_items, 300), n_users
    )
    users = rng.permutation(n_users).astype(np.int64)
    results = [
        full_ranking_topk(_fixed_scorer(table), users, n_items, exclude, k=15, block_users=b)
        for b in (1, 5, 16, 37, 1024)
    ]
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    # Reference: a stable sort of the masked scores (score desc, then lower item row).
    masked = table[users].copy()
    local, items = exclude.gather(users)
    masked[local, items] = -np.inf
    reference = np.argsort(-masked, axis=1, kind="stable")[:, :15]
    reference[np.take_along_axis(masked, reference, axis=1) == -np.inf] = -1
    np.testing.assert_array_equal(results[0], reference)


def test_torch_scorer_with_read_only_and_expanded_outputs() -> None:
    # A popularity-style scorer returns one row expanded to the block; it must not be
    # written through, and results match the numpy path.
    popularity = torch.tensor([3.0, 1.0, 2.0, 0.0])
    exclude = _sets([[0], [2]])

    def expanded(rows: npt.NDArray[np.int64]) -> torch.Tensor:
        return popularity.expand(len(rows), -1)

    def read_only(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return np.broadcast_to(popularity.numpy(), (len(rows), 4))

    a = full_ranking_topk(expanded, np.array([0, 1]), 4, exclude, k=2)
    b = full_ranking_topk(read_only, np.array([0, 1]), 4, exclude, k=2)
    assert a.tolist() == b.tolist() == [[2, 1], [0, 1]]
    assert popularity.tolist() == [3.0, 1.0, 2.0, 0.0]


def test_perfect_scorer_and_history_masking_end_to_end() -> None:
    rng = np.random.default_rng(1)
    n_users, n_items = 50, 200
    history = CsrSets.from_pairs(
        rng.integers(0, n_users, 500), rng.integers(0, n_items, 500), n_users
    )
    test_u = rng.integers(0, n_users, 150)
    test_i = rng.integers(0, n_items, 150)
    # Held-out items that the user already saw cannot be recommended: drop them.
    seen = {(int(u), int(i)) for u in range(n_users) for i in history.row(u)}
    fresh = np.array([(int(u), int(i)) not in seen for u, i in zip(test_u, test_i, strict=True)])
    relevant = CsrSets.from_pairs(test_u[fresh], test_i[fresh], n_users)

    oracle = np.zeros((n_users, n_items), np.float32)
    local, items = relevant.gather(np.arange(n_users))
    oracle[local, items] = 1.0
    # History scores highest of all, so only the mask keeps it out of the ranking.
    local, items = history.gather(np.arange(n_users))
    oracle[local, items] = 10.0

    users = np.arange(n_users, dtype=np.int64)
    got = evaluate_ranking(_fixed_scorer(oracle), users, n_items, relevant, history, ks=(10, 50))
    # No user holds more than 10 held-out items here, so recall@10 is exactly 1.
    assert relevant.lengths().max() <= 10
    assert got["recall@10"] == got["ndcg@10"] == got["hit_rate@10"] == 1.0
    assert got["n_users"] == int((relevant.lengths() > 0).sum())

    # A constant scorer ranks by item row: top-10 is the user's first unseen rows.
    flat = evaluate_ranking(
        _fixed_scorer(np.zeros_like(oracle)), users, n_items, relevant, history, ks=(10,)
    )
    assert 0.0 <= flat["recall@10"] < 1.0

"""MRR, precision, item coverage and popularity bias on tiny hand-computed rankings, alone
and through `evaluate_ranking`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from model.fullrank import evaluate_ranking
from model.metrics import hit_matrix
from model.ranking import (
    average_popularity,
    beyond_accuracy_metrics,
    item_coverage,
    precision_at_k,
    reciprocal_rank,
)
from model.sets import CsrSets

# Three users over 5 items. Relevant: user 0 {1, 3}, user 1 {0}, user 2 {2}.
TOPK = np.array([[3, 0, 1], [2, 1, 0], [0, 1, 2]], np.int64)
RELEVANT = CsrSets.from_pairs(np.array([0, 0, 1, 2]), np.array([1, 3, 0, 2]), 3)
POPULARITY = np.array([10.0, 5.0, 1.0, 0.0, 4.0])  # catalogue mean 20 / 5 = 4


def test_mrr_and_precision_by_hand() -> None:
    hits = hit_matrix(TOPK, np.arange(3), RELEVANT)
    # Hits: user 0 at ranks 0 and 2; users 1 and 2 at rank 2 only.
    assert hits.tolist() == [[True, False, True], [False, False, True], [False, False, True]]
    # @1: only user 0 hits, at rank 0 -> RR 1; the others 0.
    np.testing.assert_allclose(reciprocal_rank(hits, 1), [1.0, 0.0, 0.0])
    # @3: first hits at ranks 0, 2, 2 -> 1, 1/3, 1/3 (user 0's second hit does not count).
    np.testing.assert_allclose(reciprocal_rank(hits, 3), [1.0, 1 / 3, 1 / 3])
    np.testing.assert_allclose(precision_at_k(hits, 1), [1.0, 0.0, 0.0])
    # @3: 2 hits / 3 slots for user 0, 1 / 3 for the others.
    np.testing.assert_allclose(precision_at_k(hits, 3), [2 / 3, 1 / 3, 1 / 3])
    with pytest.raises(ValueError, match="deep"):
        reciprocal_rank(hits, 4)


def test_coverage_and_average_popularity_by_hand() -> None:
    # Top-1 shows items {3, 2, 0}: 3 of 5; top-3 shows {0, 1, 2, 3}: 4 of 5.
    assert item_coverage(TOPK, 1, 5) == pytest.approx(3 / 5)
    assert item_coverage(TOPK, 3, 5) == pytest.approx(4 / 5)
    # @1: pop of items 3, 2, 0 = 0, 1, 10.
    np.testing.assert_allclose(average_popularity(TOPK, 1, POPULARITY), [0.0, 1.0, 10.0])
    # @3: user 0 (0 + 10 + 5) / 3 = 5; users 1, 2 (1 + 5 + 10) / 3 = 16/3.
    np.testing.assert_allclose(average_popularity(TOPK, 3, POPULARITY), [5.0, 16 / 3, 16 / 3])


def test_empty_slots_are_skipped_by_popularity_and_coverage() -> None:
    topk = np.array([[4, -1, -1], [-1, -1, -1]], np.int64)
    # User 0: only item 4 (pop 4) is filled -> 4; user 1: nothing filled -> NaN.
    got = average_popularity(topk, 3, POPULARITY)
    assert got[0] == 4.0 and np.isnan(got[1])
    assert item_coverage(topk, 3, 5) == pytest.approx(1 / 5)
    out = beyond_accuracy_metrics(topk, (3,), 5, POPULARITY)
    assert out["avg_pop@3"] == 4.0  # the NaN user is left out of the mean
    assert out["avg_pop_norm@3"] == 1.0  # 4 / catalogue mean 4
    with pytest.raises(ValueError, match="n_items"):
        item_coverage(np.array([[5]], np.int64), 1, 5)


def test_beyond_accuracy_keys_and_values() -> None:
    assert beyond_accuracy_metrics(TOPK, (1, 3), 5) == pytest.approx(
        {"coverage@1": 3 / 5, "coverage@3": 4 / 5}
    )
    got = beyond_accuracy_metrics(TOPK, (1, 3), 5, POPULARITY)
    # avg_pop@1 = mean(0, 1, 10) = 11/3; avg_pop@3 = mean(5, 16/3, 16/3) = 47/9.
    assert got == pytest.approx(
        {
            "coverage@1": 3 / 5,
            "coverage@3": 4 / 5,
            "avg_pop@1": 11 / 3,
            "avg_pop_norm@1": 11 / 12,
            "avg_pop@3": 47 / 9,
            "avg_pop_norm@3": 47 / 36,
        }
    )


@pytest.mark.parametrize(
    "bad", [np.ones(4), np.zeros(5), np.array([1.0, -1, 1, 1, 1]), np.array([np.nan, 1, 1, 1, 1])]
)
def test_bad_popularity_rejected(bad: npt.NDArray[np.float64]) -> None:
    with pytest.raises(ValueError, match="item_popularity"):
        beyond_accuracy_metrics(TOPK, (1,), 5, bad)


def test_evaluate_ranking_reports_the_new_metrics() -> None:
    # Scores that rank TOPK's rows first (descending), item 4 and the rest below.
    table = np.zeros((3, 5), np.float32)
    for u, row in enumerate(TOPK):
        table[u, row] = [3.0, 2.0, 1.0]

    def score(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return table[rows].copy()

    empty = CsrSets.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), 3)
    got = evaluate_ranking(score, np.arange(3), 5, RELEVANT, empty, ks=(1, 3))
    assert got["mrr@1"] == pytest.approx(1 / 3)
    assert got["mrr@3"] == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)  # 5/9
    assert got["precision@1"] == pytest.approx(1 / 3)
    assert got["precision@3"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)  # 4/9
    assert got["coverage@3"] == pytest.approx(4 / 5)
    assert "avg_pop@3" not in got and list(got)[-1] == "n_users"
    with_pop = evaluate_ranking(
        score, np.arange(3), 5, RELEVANT, empty, ks=(1, 3), item_popularity=POPULARITY
    )
    assert with_pop["avg_pop@3"] == pytest.approx(47 / 9)
    assert with_pop["avg_pop_norm@1"] == pytest.approx(11 / 12)
    assert {k: v for k, v in with_pop.items() if "avg_pop" not in k} == got

    def never(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        raise AssertionError("scored before the popularity was checked")

    with pytest.raises(ValueError, match="item_popularity"):
        evaluate_ranking(never, np.arange(3), 5, RELEVANT, empty, item_popularity=np.ones(4))

"""ItemKNN and EASE: exact values on hand-made matrices, the numpy closed form, and recall
above popularity on data with planted communities, through `evaluate_ranking`."""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt
import pytest

from model import baselines
from model.baselines import EASE, BaselineSkipped, ItemKNN, fit_baseline, interaction_matrix
from model.dataset import random_ratio_split
from model.fullrank import evaluate_ranking
from model.sets import CsrSets

# Users x items: u0 {0, 1}, u1 {0, 1, 2}, u2 {2, 3}, u3 {1}; (u1, 2) appears twice.
USER = np.array([0, 0, 1, 1, 1, 1, 2, 2, 3], np.int64)
ITEM = np.array([0, 1, 0, 1, 2, 2, 2, 3, 1], np.int64)


def test_interaction_matrix_is_binary() -> None:
    x = interaction_matrix(USER, ITEM, 4, 5).toarray()
    assert x.dtype == np.float32 and x.shape == (4, 5)
    assert x[1, 2] == 1.0 and x.sum() == 8  # the repeated pair counts once
    with pytest.raises(ValueError, match=r"\[0, 4\) x \[0, 3\)"):
        interaction_matrix(USER, ITEM, 4, 3)


def test_item_knn_neighbours_by_hand() -> None:
    # Item degrees 2, 3, 2, 1. Co-occurrences: (0,1) 2 users, (0,2) 1, (1,2) 1, (2,3) 1.
    # Cosine: s01 = 2/sqrt(6), s02 = 1/2, s12 = 1/sqrt(6), s23 = 1/sqrt(2), s03 = s13 = 0.
    s01, s02, s12, s23 = 2 / math.sqrt(6), 0.5, 1 / math.sqrt(6), 1 / math.sqrt(2)
    knn = ItemKNN.fit(USER, ITEM, 4, 4, k=2)
    # weights[i, j] = s_ij for i among j's top 2: item 0 keeps {1, 2}, item 1 {0, 2},
    # item 2 {3, 0} (s12 is third), item 3 only {2} (zero similarities are not neighbours).
    expected = np.array(
        [[0, s01, s02, 0], [s01, 0, 0, 0], [s02, s12, 0, s23], [0, 0, s23, 0]], np.float32
    )
    np.testing.assert_allclose(knn.weights.toarray(), expected, rtol=1e-6)
    # k=1: item 2 keeps only item 3.
    one = ItemKNN.fit(USER, ITEM, 4, 4, k=1).weights.toarray()
    assert np.count_nonzero(one, axis=0).tolist() == [1, 1, 1, 1]
    assert one[3, 2] == pytest.approx(s23) and one[1, 0] == pytest.approx(s01)
    # u3 (history {1}) scores item j with weights[1, j]: item 0 gets s01; item 2 nothing,
    # because s12 fell out of item 2's top 2.
    got = knn.scores(np.array([3, 0], np.int64))
    assert got.dtype == np.float32 and got.shape == (2, 4)
    np.testing.assert_allclose(got[0], [s01, 0, 0, 0], rtol=1e-6)
    # u0 (history {0, 1}): item 2 gets s02 (0 is in 2's top 2; 1 is not), item 0 gets s01.
    np.testing.assert_allclose(got[1], [s01, s01, s02, 0], rtol=1e-6)


def test_item_knn_shrinkage_damps_low_support() -> None:
    # shrink=1: s01 = 2 / (sqrt(6) + 1), s23 = 1 / (sqrt(2) + 1).
    w = ItemKNN.fit(USER, ITEM, 4, 4, k=2, shrink=1.0).weights.toarray()
    assert w[0, 1] == pytest.approx(2 / (math.sqrt(6) + 1))
    assert w[3, 2] == pytest.approx(1 / (math.sqrt(2) + 1))


def _ease_reference(x: npt.NDArray[np.float64], l2: float) -> npt.NDArray[np.float64]:
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p / np.diag(p)[None, :]


def test_ease_matches_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((60, 25)) < 0.25).astype(np.float64)
    x[:, 7] = 0  # an item with no training interaction
    u, i = np.nonzero(x)
    ease = EASE.fit(u, i, 60, 25, l2=5.0)
    ref = _ease_reference(x, 5.0)
    assert np.abs(np.diag(ref)).max() < 1e-12 and not ref[:, 7].any()
    assert 7 not in ease.active and len(ease.active) == 24
    full = np.zeros((25, 25))
    full[np.ix_(ease.active, ease.active)] = ease.weights
    np.testing.assert_allclose(full, ref, atol=1e-5)
    assert ease.weights.dtype == np.float32 and not np.diag(ease.weights).any()
    rows = np.array([3, 0, 59], np.int64)
    got = ease.scores(rows)
    assert got.dtype == np.float32 and got.shape == (3, 25) and got.flags.writeable
    np.testing.assert_allclose(got, x[rows] @ ref, atol=1e-5)


def test_ease_by_hand_on_one_pair() -> None:
    # Two items always taken together by 2 users: G = [[2, 2], [2, 2]] + l2 I with l2 = 2,
    # P = inv([[4, 2], [2, 4]]) = [[4, -2], [-2, 4]] / 12, so B01 = -P01 / P11 = 2/4 = 0.5.
    ease = EASE.fit(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), 2, 2, l2=2.0)
    np.testing.assert_allclose(ease.weights, [[0.0, 0.5], [0.5, 0.0]], rtol=1e-6)


def test_ease_skips_too_many_items_with_a_reason() -> None:
    with pytest.raises(BaselineSkipped) as info:
        EASE.fit(USER, ITEM, 4, 4, max_items=3)
    assert "4 items" in info.value.reason and "max_items=3" in info.value.reason
    # Items without training interactions do not count.
    EASE.fit(USER, ITEM, 4, 50, max_items=4)
    with pytest.raises(ValueError, match="l2"):
        EASE.fit(USER, ITEM, 4, 4, l2=0.0)


def test_fit_baseline_auto_picks_by_size_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="model.baselines"):
        assert isinstance(fit_baseline("auto", USER, ITEM, 4, 4), EASE)
        small = fit_baseline("auto", USER, ITEM, 4, 4, max_items=3)
    assert isinstance(small, ItemKNN)
    assert "EASE was skipped" in caplog.text and "max_items=3" in caplog.text
    assert isinstance(fit_baseline("itemknn", USER, ITEM, 4, 4), ItemKNN)
    with pytest.raises(BaselineSkipped):
        fit_baseline("ease", USER, ITEM, 4, 4, max_items=3)
    with pytest.raises(ValueError, match="unknown baseline"):
        fit_baseline("svd", USER, ITEM, 4, 4)  # type: ignore[arg-type]


def test_both_beat_popularity_on_planted_communities() -> None:
    # 4 communities of 50 users and 40 items; users interact only inside their own, so
    # popularity's global top 10 serves at most a community or two.
    rng = np.random.default_rng(0)
    n_comm, users_per, items_per, per_user = 4, 50, 40, 12
    n_users, n_items = n_comm * users_per, n_comm * items_per
    user = np.repeat(np.arange(n_users), per_user)
    comm = user // users_per
    item = comm * items_per + np.concatenate(
        [rng.choice(items_per, per_user, replace=False) for _ in range(n_users)]
    )
    split = random_ratio_split(user, (0.8, 0.0, 0.2), seed=0)
    train_u, train_i = user[split.train], item[split.train]
    relevant = CsrSets.from_pairs(user[split.test], item[split.test], n_users)
    exclude = CsrSets.from_pairs(train_u, train_i, n_users)
    popularity = np.bincount(train_i, minlength=n_items).astype(np.float32)

    def pop_scores(rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return np.broadcast_to(popularity, (len(rows), n_items))

    users = np.arange(n_users, dtype=np.int64)

    def recall(fn: baselines.Baseline | None) -> float:
        score = pop_scores if fn is None else fn.scores
        return evaluate_ranking(score, users, n_items, relevant, exclude, ks=(10,))["recall@10"]

    pop = recall(None)
    ease = recall(EASE.fit(train_u, train_i, n_users, n_items, l2=10.0))
    knn = recall(ItemKNN.fit(train_u, train_i, n_users, n_items, k=20))
    # In-community chance is ~10 of 30 unseen items; popularity reaches ~1 community in 4.
    assert ease > 0.25 and knn > 0.25, (ease, knn, pop)
    assert ease > 2 * pop and knn > 2 * pop, (ease, knn, pop)


@pytest.mark.parametrize("kind", ["itemknn", "ease"])
def test_with_inputs_scores_from_other_interactions_with_the_same_weights(kind: str) -> None:
    # Fit on items 0-1 co-occurring; then user 1, whose training row is empty, gains item 0
    # as input (e.g. a validation interaction) and is scored towards item 1.
    user = np.array([0, 0, 2, 2, 3])
    item = np.array([0, 1, 0, 1, 2])
    fitted = fit_baseline(kind, user, item, 4, 3)  # type: ignore[arg-type]
    assert not fitted.scores(np.array([1])).any()
    scoring = fitted.with_inputs(np.r_[user, 1], np.r_[item, 0])
    row = scoring.scores(np.array([1]))[0]
    assert row[1] > 0 and row[1] > row[2]
    assert np.array_equal(scoring.scores(np.array([0])), fitted.scores(np.array([0])))

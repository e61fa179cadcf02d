"""Cold-start evaluation against hand-computed values, and the generator's held-back items."""

from __future__ import annotations

import numpy as np
import pytest

from model.cold_start import (
    category_popularity,
    cold_start_items,
    cold_start_metrics,
    user_category_affinity,
)
from model.synthetic import generate, synthetic_config

# 3 users, 5 items. Items 3 and 4 never occur in training; both occur in test.
USER = np.array([0, 0, 1, 1, 2, 0, 1, 2, 2])
ITEM = np.array([0, 1, 1, 2, 0, 3, 4, 3, 2])
TRAIN = np.array([True] * 5 + [False] * 4)
TEST = ~TRAIN


def test_new_items_have_test_but_no_training_interactions() -> None:
    np.testing.assert_array_equal(cold_start_items(ITEM, TRAIN, TEST, 5), [3, 4])


def test_metrics_rank_only_the_new_items() -> None:
    new = np.array([3, 4])
    # User 0 took item 3, user 1 item 4, user 2 item 3 (local ids 0, 1, 0).
    # A scorer that always prefers local item 1 (= item 4): top-1 hits user 1 only.
    res = cold_start_metrics(
        {"prefers 4": lambda rows: np.tile(np.float32([0.0, 1.0]), (len(rows), 1))},
        USER, ITEM, TEST, new, n_users=3, n_items=5, ks=(1, 50),
    )  # fmt: skip
    assert res is not None and res["n_items"] == 2 and res["n_users"] == 3
    metrics = res["rankers"]["prefers 4"]  # type: ignore[index]
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@2"] == pytest.approx(1.0)  # k capped at the 2 new items
    assert "recall@50" not in metrics


def test_no_new_items_means_no_report() -> None:
    assert cold_start_items(ITEM, np.ones(9, bool), np.zeros(9, bool), 5).size == 0
    assert cold_start_metrics({}, USER, ITEM, TEST, np.array([], np.int64), 3, 5, (10,)) is None


def test_category_baselines_by_hand() -> None:
    category = np.array([0, 0, 1, 1, 0])  # items 3 -> cat 1, 4 -> cat 0
    # Training interactions: items 0,1,1,2,0 -> categories 0,0,0,1,0: cat 0 = 4, cat 1 = 1.
    np.testing.assert_array_equal(
        category_popularity(category, ITEM, TRAIN, np.array([3, 4])), [1.0, 4.0]
    )
    score = user_category_affinity(category, USER, ITEM, TRAIN, np.array([3, 4]), 3)
    got = score(np.array([1]))  # user 1 took items 1 (cat 0) and 2 (cat 1)
    assert got[0, 0] == pytest.approx(1.0, abs=1e-2) and got[0, 1] == pytest.approx(1.0, abs=1e-2)
    assert got[0, 1] > got[0, 0]  # tie broken by overall category popularity


def test_generator_holds_back_items_until_their_release() -> None:
    cfg = synthetic_config("tiny", new_item_frac=0.05, new_item_window=0.2)
    data = generate(cfg)
    assert data.held_back.sum() == 30  # 5% of 600
    window = cfg.days * 86_400
    release = data.inter_ts.min() // 86_400 * 86_400 + 0.8 * window  # the window starts at 0:00
    held = set(data.item_id[data.held_back].tolist())
    late = np.isin(data.inter_item, list(held))
    assert late.sum() > 0 and (data.inter_ts[late] >= release).all()
    assert (data.inter_ts[~late] < release).any()  # other items live on the whole timeline
    shown = np.isin(data.imp_item, list(held))
    assert (data.imp_ts[shown] >= release).all()  # nobody is shown an item before it exists


def test_no_held_back_items_when_the_knob_is_zero() -> None:
    data = generate(synthetic_config("tiny", new_item_frac=0.0))
    assert not data.held_back.any()

"""The linear two-tower (model.linear, model.linear_train): the closed-form fit is the
DLAE optimum (full rank: the ridge solution; low rank: no orthonormal basis does better),
both eigen paths agree, the content map gives new items a vector, and the model saves,
loads and refuses SGD."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp
import torch
from pydantic import ValidationError

from model.config import TowerConfig, TowerSpec, TrainConfig
from model.dataset import random_ratio_split
from model.features import FeatureTables
from model.fullrank import evaluate_ranking
from model.linear import LINEAR_MAX_ITEMS, bag_matrix, fit_content_map, fit_dlae
from model.linear_train import fit_linear
from model.pipeline import Prepared, fit, history_rows, model_scorer, prepare, validation_sets
from model.towers import TwoTower, load_two_tower
from model.train import EpochStats, init_model, train
from tests.model.worlds import tiny_dataset

L2, P = 5.0, 0.3


def _bags(n_users: int, n_items: int, seed: int, density: float = 0.2) -> sp.csr_array:
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < density).astype(np.float64)
    x[:, 0] = 1.0  # no empty bag, one very popular item
    return sp.csr_array(x)


def _penalised(x: sp.csr_array, l2: float, p: float) -> npt.NDArray[np.float64]:
    dense = x.toarray()
    a = dense.T @ dense
    a[np.diag_indices(x.shape[1])] += l2 + p / (1 - p) * np.diag(a)
    return a


def _objective(x: sp.csr_array, b: npt.NDArray[np.float64], l2: float, p: float) -> float:
    """||x - x B||^2 + ||Lambda^(1/2) B||^2 as the module docstring defines it."""
    dense = x.toarray()
    lam = l2 + p / (1 - p) * (dense * dense).sum(0)
    return float(np.square(dense - dense @ b).sum() + (lam[:, None] * b * b).sum())


def _scores(
    x: sp.csr_array, w: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """(U, n) scores of the bags in ``x`` (none empty): input rows 0..n-1 of ``w``."""
    return x.toarray() @ w[: x.shape[1]] @ v.T


@pytest.mark.parametrize(("n_users", "n_items"), [(30, 50), (80, 40)])
def test_full_rank_fit_is_the_ridge_solution(n_users: int, n_items: int) -> None:
    # Fewer users than items (the (U, U) eigen path) and more (the (n, n) one).
    x = _bags(n_users, n_items, seed=1)
    f = fit_dlae(x, 200, L2, P)
    dense = x.toarray()
    ridge = np.linalg.solve(_penalised(x, L2, P), dense.T @ dense)
    np.testing.assert_allclose(f.w[:n_items] @ f.v.T, ridge, atol=1e-9)


def test_both_eigen_paths_give_the_same_low_rank_scores() -> None:
    x = _bags(40, 40, seed=2)
    # 40 users x 40 items takes the (n, n) path; one extra item (never taken) makes the
    # users fewer than the items, the (U, U) path, and must not change any score.
    wide = sp.csr_array(np.hstack([x.toarray(), np.zeros((40, 1))]))
    a, b = fit_dlae(x, 7, L2, P), fit_dlae(wide, 7, L2, P)
    np.testing.assert_allclose(_scores(x, a.w, a.v), (_scores(wide, b.w, b.v))[:, :40],
                               atol=1e-9)  # fmt: skip


def test_low_rank_fit_beats_every_other_basis_of_that_rank() -> None:
    x = _bags(60, 30, seed=3)
    k = 5
    f = fit_dlae(x, k, L2, P)
    best = _objective(x, f.w[:30] @ f.v.T, L2, P)
    a, cross = _penalised(x, L2, P), x.toarray().T @ x.toarray()
    rng = np.random.default_rng(0)
    for _ in range(20):
        # Any other orthonormal basis with its own best W does worse.
        v, _ = np.linalg.qr(f.v[:, :k] + 0.3 * rng.standard_normal((30, k)))
        w = np.linalg.solve(a, cross @ v)
        assert _objective(x, w @ v.T, L2, P) > best
    # And the rank-k truncation of the full-rank ridge solution is not the optimum either.
    ridge = np.linalg.solve(a, cross)
    u, s, vt = np.linalg.svd(ridge, full_matrices=False)
    assert _objective(x, (u[:, :k] * s[:k]) @ vt[:k], L2, P) >= best - 1e-9


def test_rank_above_the_problem_pads_with_zero_columns_and_loss_is_reported() -> None:
    x = _bags(10, 20, seed=4)
    f = fit_dlae(x, 32, L2, P)
    assert f.w.shape == (21, 32) and f.v.shape == (20, 32)
    assert not f.w[:, 10:].any() and not f.v[:, 10:].any()
    residual = x.toarray() - _scores(x, f.w, f.v)
    assert f.loss == pytest.approx(float(np.square(residual).sum()) / 10)


def test_the_empty_bag_ranks_by_popularity() -> None:
    # At full rank the empty bag's vector scores exactly each item's share of users.
    x = _bags(30, 20, seed=9, density=0.3)
    f = fit_dlae(x, 20, L2, P)
    share = x.toarray().mean(axis=0)
    np.testing.assert_allclose(f.v @ f.w[20], share, atol=1e-9)
    # At low rank it is popularity as the item space holds it: the top item stays on top.
    low = fit_dlae(x, 3, L2, P)
    assert int(np.argmax(low.v @ low.w[20])) == int(np.argmax(share)) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"l2": 0.0}, "linear_l2 must be > 0"),
        ({"dropout": 1.0}, "linear_dropout must be in"),
        ({"dim": 0}, "rank must be >= 1"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict[str, float], message: str) -> None:
    args: dict[str, float] = {"dim": 4, "l2": L2, "dropout": P} | kwargs
    with pytest.raises(ValueError, match=message):
        fit_dlae(_bags(5, 5, seed=5), int(args["dim"]), args["l2"], args["dropout"])


def test_catalogue_over_the_limit_is_refused_before_any_dense_allocation() -> None:
    huge = sp.csr_array((3, LINEAR_MAX_ITEMS + 1))
    with pytest.raises(ValueError, match="over its limit"):
        fit_dlae(huge, 4, L2, P)


def test_bag_matrix_counts_an_item_once_and_ignores_padding() -> None:
    bags = np.array([[3, 1, 3, 0], [0, 0, 0, 0]], np.int64)
    x = bag_matrix(bags, 4)
    np.testing.assert_array_equal(x.toarray(), [[1, 0, 1, 0], [0, 0, 0, 0]])


def test_content_map_recovers_a_linear_rule_from_category_and_content() -> None:
    rng = np.random.default_rng(6)
    n, k, n_cat = 400, 3, 4
    cats = rng.integers(0, n_cat + 1, n)
    content = rng.standard_normal((n, 2)).astype(np.float32)
    cat_true = rng.standard_normal((n_cat + 1, k))
    w_true = rng.standard_normal((2, k))
    v = cat_true[cats] + content @ w_true + 0.5
    cat_w, content_w, intercept = fit_content_map(v, cats, content, n_cat)
    guess = cat_w[cats] + content @ content_w + intercept
    assert np.abs(guess - v).max() < 0.1  # a ridge of 1 over ~80 items a category shrinks little
    np.testing.assert_allclose(content_w, w_true, atol=0.02)


def _spec(n_items: int = 6) -> TowerSpec:
    tower = TowerConfig(kind="linear", embedding_dim=4, history_len=3)
    return TowerSpec(tower=tower, n_users=5, n_items=n_items, n_categories=2,
                     profile_dim=1, content_dim=2)  # fmt: skip


def _fitted(spec: TowerSpec) -> tuple[TwoTower, FeatureTables]:
    rng = np.random.default_rng(7)
    n = spec.n_items
    tables = FeatureTables.build(
        rng.standard_normal((spec.n_users, 1)).astype(np.float32),
        rng.integers(0, 2, n).astype(np.int32),
        rng.standard_normal((n, 2)).astype(np.float32),
        2,
    )
    model = init_model(spec, 0)
    model.fit_feature_scaling(tables.user_profile[1:], tables.item_content[1:])
    history = np.array([[1, 2, 0], [2, 3, 4], [5, 6, 1], [1, 0, 0], [0, 0, 0]], np.int64)
    fit_linear(model, tables, history, TrainConfig(linear_l2=L2, linear_dropout=P))
    return model.eval(), tables


def test_towers_score_exactly_the_fit() -> None:
    spec = _spec()
    model, tables = _fitted(spec)
    history = np.array([[1, 2, 0], [2, 3, 4], [5, 6, 1], [1, 0, 0]], np.int64)
    f = fit_dlae(bag_matrix(history, 6), 4, L2, P)
    rows = torch.arange(1, 7)
    with torch.no_grad():
        items = model.forward_item(rows, tables.item_category_rows[rows], tables.item_content[rows])
        users = model.forward_user(torch.zeros(4, dtype=torch.int64), torch.zeros(4, 1),
                                   torch.from_numpy(history))  # fmt: skip
    np.testing.assert_allclose(items.numpy(), f.v, atol=1e-5)
    np.testing.assert_allclose(users.numpy(), bag_matrix(history, 6).toarray() @ f.w[:6],
                               atol=1e-5)  # fmt: skip
    # The constant row is added to empty bags only: padding and unseen items (row 0) are
    # no item, and a bag with an item has no constant.
    with torch.no_grad():
        empty = model.forward_user(torch.zeros(1, dtype=torch.int64), torch.zeros(1, 1),
                                   torch.zeros(1, 3, dtype=torch.int64))  # fmt: skip
    np.testing.assert_allclose(empty.numpy()[0], f.w[6], atol=1e-6)


def test_a_new_item_gets_the_content_maps_vector() -> None:
    model, _ = _fitted(_spec())
    item = model.item_tower
    cat, content = torch.tensor([1]), torch.tensor([[0.5, -1.0]])
    with torch.no_grad():
        new = model.forward_item(torch.tensor([0]), cat, content)
        expected = item.category_embedding(cat) + item.content(item.content_norm(content))  # type: ignore[operator]
    np.testing.assert_allclose(new.numpy(), expected.numpy(), atol=1e-6)
    assert torch.linalg.vector_norm(new) > 0


def test_linear_model_saves_and_loads_through_json() -> None:
    spec = _spec()
    model, _ = _fitted(spec)
    config = json.loads(json.dumps(spec.model_dump(mode="json")))
    loaded = load_two_tower(config, model.state_dict())
    hist = torch.tensor([[2, 5, 0]])
    with torch.no_grad():
        a = model.forward_user(torch.zeros(1, dtype=torch.int64), torch.zeros(1, 1), hist)
        b = loaded.forward_user(torch.zeros(1, dtype=torch.int64), torch.zeros(1, 1), hist)
    torch.testing.assert_close(a, b)
    assert loaded.user_norm_sq is None and loaded.linear


def test_linear_tower_refuses_sgd_and_a_missing_bag() -> None:
    model = init_model(_spec(), 0)
    with pytest.raises(ValueError, match="closed form"):
        train(model, FeatureTables.build(np.zeros((5, 1), np.float32), np.zeros(6, np.int32),
                                         np.zeros((6, 2), np.float32), 2),
              np.array([1, 2]), np.array([1, 2]), TrainConfig())  # fmt: skip
    with pytest.raises(ValueError, match="pass history"):
        model.forward_user(torch.zeros(1, dtype=torch.int64), torch.zeros(1, 1))
    with pytest.raises(ValueError, match="world_size 1"):
        fit_linear(model, FeatureTables.build(np.zeros((5, 1), np.float32), np.zeros(6, np.int32),
                                              np.zeros((6, 2), np.float32), 2),
                   np.ones((2, 3), np.int64), TrainConfig(world_size=2))  # fmt: skip


def test_config_refuses_a_linear_tower_without_a_bag_or_with_a_bias_slot() -> None:
    with pytest.raises(ValidationError, match="history_len must be >= 1"):
        TowerConfig(kind="linear")
    with pytest.raises(ValidationError, match="no item-bias slot"):
        TowerConfig(kind="linear", history_len=10, item_bias=True)


def test_pipeline_fits_a_linear_model_and_ranks_far_above_popularity() -> None:
    data = tiny_dataset()
    prep = prepare(data, random_ratio_split(data.inter_user, (0.8, 0.1, 0.1), seed=0))
    tower = TowerConfig(kind="linear", embedding_dim=64, history_len=200)
    seen: list[EpochStats] = []
    model, result = fit(prep, tower, TrainConfig(), validate_metric="recall@20",
                        on_epoch=seen.append)  # fmt: skip
    assert len(result.epochs) == 1 and result.best_epoch == 1 and seen == result.epochs
    assert result.epochs[0].val_metric is not None and np.isfinite(result.epochs[0].loss)
    # The scores of the towers are the fit's: bags of each user's training items.
    bags = history_rows(prep, prep.split.train, 200)
    x = bag_matrix(bags[(bags > 0).any(axis=1)], prep.vocab.n_items)
    f = fit_dlae(x, 64, TrainConfig().linear_l2, TrainConfig().linear_dropout)
    score = model_scorer(model, prep, prep.split.train)
    users = np.flatnonzero((bags > 0).any(axis=1))[:5]
    got = score(users).numpy()
    expected = _scores(bag_matrix(bags[users], prep.vocab.n_items), f.w, f.v)
    cols = prep.vocab.item_id_row > 0
    np.testing.assert_allclose(got[:, cols], expected[:, prep.vocab.item_id_row[cols] - 1],
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    pop = np.bincount(data.inter_item[prep.split.train], minlength=data.n_items)
    assert result.epochs[0].val_metric > 1.5 * _val_recall(prep, pop)


def _val_recall(prep: Prepared, pop: npt.NDArray[np.int64]) -> float:
    sets = validation_sets(prep, None, 0)
    assert sets is not None
    users, relevant, exclude = sets
    scores = torch.from_numpy(np.tile(pop.astype(np.float32), (1, 1)))
    return evaluate_ranking(lambda rows: scores.expand(len(rows), -1), users, len(pop),
                            relevant, exclude, ks=(20,))["recall@20"]  # fmt: skip


def test_a_new_item_looks_like_the_tail_not_like_the_average_item() -> None:
    """The content map is fitted on the items taken at most as often as the median one:
    a new item starts near them, not near the mean trained vector, which the popular items
    dominate (a new item would otherwise outrank most of the catalogue)."""
    rng = np.random.default_rng(8)
    n_users, n_items = 80, 40
    popularity = np.r_[np.full(5, 0.8), np.full(35, 0.05)]
    taken = rng.random((n_users, n_items)) < popularity
    history = np.zeros((n_users, n_items), np.int64)
    for u in range(n_users):
        rows = np.flatnonzero(taken[u]) + 1
        history[u, : len(rows)] = rows
    spec = TowerSpec(tower=TowerConfig(kind="linear", embedding_dim=8, history_len=n_items),
                     n_users=n_users, n_items=n_items, n_categories=1, profile_dim=1,
                     content_dim=2)  # fmt: skip
    content = rng.standard_normal((n_items, 2)).astype(np.float32)
    tables = FeatureTables.build(
        np.zeros((n_users, 1), np.float32), np.zeros(n_items, np.int32), content, 1
    )
    model = init_model(spec, 0)
    model.fit_feature_scaling(tables.user_profile[1:], tables.item_content[1:])
    fit_linear(model, tables, history, TrainConfig(linear_l2=L2, linear_dropout=P))
    rows = torch.arange(1, n_items + 1)
    with torch.no_grad():
        trained = model.forward_item(
            rows, tables.item_category_rows[rows], tables.item_content[rows]
        )
        mean_content = tables.item_content[1:].mean(0, keepdim=True)
        new = model.forward_item(torch.tensor([0]), torch.tensor([1]), mean_content)[0]
    counts = taken.sum(0)
    tail = trained[torch.from_numpy(counts <= np.median(counts))].mean(0)
    assert torch.linalg.vector_norm(new - tail) < 0.5 * torch.linalg.vector_norm(
        new - trained.mean(0)
    )

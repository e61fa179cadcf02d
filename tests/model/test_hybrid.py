"""The hybrid two-tower (model.hybrid): its parts train as alone, the blend chosen on
validation is at least as good there as either part, its scores are the weighted sum of
the parts' scores, and it saves, loads and refuses what it cannot do."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import pytest
import torch
from pydantic import ValidationError

from model.config import TowerConfig, TowerSpec, TrainConfig
from model.dataset import random_ratio_split
from model.features import FeatureTables
from model.hybrid import BLEND_GRID, HybridItemTower, HybridUserTower, choose_blend, part_towers
from model.pipeline import (
    PartCache,
    Prepared,
    fit,
    item_vectors,
    prepare,
    user_vectors,
    vector_validator,
)
from model.towers import TwoTower, load_two_tower
from model.train import EpochStats, TrainResult, init_model, train
from tests.model.worlds import tiny_dataset

TOWER = TowerConfig(kind="hybrid", embedding_dim=16, linear_dim=32, history_len=200,
                    item_bias=True)  # fmt: skip
TRAIN = TrainConfig(epochs=3, early_stopping_patience=2)
METRIC = "recall@20"


@pytest.fixture(scope="module")
def prep() -> Prepared:
    data = tiny_dataset()
    return prepare(data, random_ratio_split(data.inter_user, (0.8, 0.1, 0.1), seed=0))


@pytest.fixture(scope="module")
def fitted(prep: Prepared) -> tuple[TwoTower, TrainResult, list[EpochStats], PartCache]:
    seen: list[EpochStats] = []
    parts: PartCache = {}
    model, result = fit(prep, TOWER, TRAIN, validate_metric=METRIC, on_epoch=seen.append,
                        parts=parts)  # fmt: skip
    return model, result, seen, parts


def test_config_splits_into_parts_and_sizes_the_vector() -> None:
    mlp, linear = part_towers(TOWER)
    assert (mlp.kind, mlp.embedding_dim, mlp.history_len, mlp.item_bias) == ("mlp", 16, 0, True)
    assert (linear.kind, linear.embedding_dim, linear.history_len) == ("linear", 32, 200)
    assert not linear.item_bias
    assert TOWER.output_dim == 48 and mlp.output_dim == 16 and linear.output_dim == 32
    with pytest.raises(ValidationError, match="history_len must be >= 1"):
        TowerConfig(kind="hybrid")
    with pytest.raises(ValueError, match="splits kind 'hybrid'"):
        part_towers(mlp)


def test_the_blend_is_the_weighted_sum_of_the_parts_and_beats_both_on_validation(
    prep: Prepared, fitted: tuple[TwoTower, TrainResult, list[EpochStats], PartCache]
) -> None:
    model, result, seen, parts = fitted
    # The MLP part's epochs, then the linear fit and blend: the model holds the last.
    assert result.best_epoch == len(result.epochs) == len(seen) and seen == result.epochs
    (mlp, mlp_result), = parts.values()  # fmt: skip
    assert result.epochs[:-1] == mlp_result.epochs
    linear, _ = fit(prep, part_towers(TOWER)[1], TRAIN, validate_metric=METRIC)
    validate = vector_validator(prep, METRIC, 5000, TRAIN.seed)
    assert validate is not None
    train_mask = prep.split.train
    u_mlp, u_lin = user_vectors(mlp, prep, train_mask), user_vectors(linear, prep, train_mask)
    i_mlp, i_lin = item_vectors(mlp, prep), item_vectors(linear, prep)
    assert isinstance(model.user_tower, HybridUserTower)
    a_mlp, a_lin = model.user_tower.weights.tolist()
    # Its vectors are [a_mlp u_mlp, a_lin u_lin] . [v_mlp, v_lin]: the parts as trained.
    got = user_vectors(model, prep, train_mask) @ item_vectors(model, prep).T
    want = a_mlp * (u_mlp @ i_mlp.T) + a_lin * (u_lin @ i_lin.T)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # The grid holds both parts alone, so the blend chosen is at least as good as either.
    blended = result.epochs[-1].val_metric
    assert blended is not None
    assert result.blend_share is not None and set(result.blend) == set(BLEND_GRID)
    assert blended == result.blend[result.blend_share]
    assert blended == pytest.approx(validate(*_joined(model, prep)))
    assert blended >= validate(u_mlp, i_mlp) - 1e-9
    assert blended >= validate(u_lin, i_lin) - 1e-9
    assert model.user_norm_sq is None and model.hybrid and model.dim == 48


def _joined(model: TwoTower, prep: Prepared) -> tuple[npt.NDArray[np.float32], ...]:
    return user_vectors(model, prep, prep.split.train), item_vectors(model, prep)


def test_choose_blend_scales_the_parts_and_keeps_the_earlier_share_on_a_tie() -> None:
    rng = np.random.default_rng(0)
    users = (rng.standard_normal((50, 4)).astype(np.float32),
             10.0 * rng.standard_normal((50, 3)).astype(np.float32))  # fmt: skip
    items = (rng.standard_normal((30, 4)).astype(np.float32),
             rng.standard_normal((30, 3)).astype(np.float32))  # fmt: skip
    spread = [float(np.std(u.astype(np.float64) @ i.T)) for u, i in zip(users, items, strict=True)]
    calls: list[tuple[float, float]] = []

    def peak_at_03(u: npt.NDArray[np.float32], _: npt.NDArray[np.float32]) -> float:
        # Recover the weights this blend applied from the user vectors themselves.
        a_mlp = float(u[0, 0] / users[0][0, 0])
        a_lin = float(u[0, 4] / users[1][0, 0])
        calls.append((a_mlp, a_lin))
        share = 1.0 - a_mlp
        return -round(abs(share - 0.3), 6)

    choice = choose_blend(users, items, peak_at_03)
    assert len(calls) == len(BLEND_GRID) and choice.share == 0.3
    assert set(choice.tried) == set(BLEND_GRID)
    # The linear part is put on the MLP part's score scale: a_lin = share * s_mlp / s_lin.
    assert choice.weights[0] == pytest.approx(0.7)
    assert choice.weights[1] == pytest.approx(0.3 * spread[0] / spread[1], rel=1e-5)
    assert calls[0] == pytest.approx((1.0, 0.0))  # share 0: the MLP part as trained
    flat = choose_blend(users, items, lambda u, i: 0.5)
    assert flat.share == 0.0  # a tie keeps the smaller share (the MLP part alone)
    blind = choose_blend(users, items, None)
    assert blind.share == 0.5 and blind.tried == {}


def test_hybrid_saves_and_loads_through_json_with_its_blend(
    prep: Prepared, fitted: tuple[TwoTower, TrainResult, list[EpochStats], PartCache]
) -> None:
    model = fitted[0]
    config = json.loads(json.dumps(model.spec.model_dump(mode="json")))
    state = model.state_dict()
    assert "user_tower.weights" in state
    loaded = load_two_tower(config, state)
    torch.testing.assert_close(loaded.user_tower.weights, model.user_tower.weights)
    np.testing.assert_allclose(_joined(loaded, prep)[0], _joined(model, prep)[0], atol=1e-6)
    np.testing.assert_allclose(_joined(loaded, prep)[1], _joined(model, prep)[1], atol=1e-6)
    with torch.no_grad():  # an unknown user with an empty bag: the unknown row + popularity
        cold = loaded.forward_user(torch.zeros(1, dtype=torch.int64),
                                   torch.zeros(1, model.spec.profile_dim),
                                   torch.zeros(1, 1, dtype=torch.int64))  # fmt: skip
    assert cold.shape == (1, 48) and torch.isfinite(cold).all() and cold[:, 16:].abs().sum() > 0


def test_a_tuners_trials_train_the_mlp_part_once(
    prep: Prepared, fitted: tuple[TwoTower, TrainResult, list[EpochStats], PartCache]
) -> None:
    _, first, _, parts = fitted
    (mlp, _), = parts.values()  # fmt: skip
    seen: list[EpochStats] = []
    other = TRAIN.model_copy(update={"linear_l2": 30.0, "linear_dropout": 0.1})
    _, result = fit(prep, TOWER, other, validate_metric=METRIC, on_epoch=seen.append,
                    parts=parts)  # fmt: skip
    assert len(parts) == 1 and next(iter(parts.values()))[0] is mlp  # reused, not retrained
    assert result.epochs[:-1] == first.epochs[:-1] and seen == result.epochs  # replayed
    # Another MLP recipe is a new part.
    fit(prep, TOWER, TRAIN.model_copy(update={"epochs": 1}), validate_metric=METRIC,
        parts=parts)  # fmt: skip
    assert len(parts) == 2


def test_hybrid_refuses_sgd_as_a_whole_and_a_missing_bag() -> None:
    spec = TowerSpec(tower=TOWER, n_users=5, n_items=6, n_categories=2, profile_dim=1,
                     content_dim=2)  # fmt: skip
    model = init_model(spec, 0)
    tables = FeatureTables.build(np.zeros((5, 1), np.float32), np.zeros(6, np.int32),
                                 np.zeros((6, 2), np.float32), 2)  # fmt: skip
    with pytest.raises(ValueError, match="not trained by SGD as a whole"):
        train(model, tables, np.array([1, 2]), np.array([1, 2]), TrainConfig())
    with pytest.raises(ValueError, match="not trained by SGD as a whole"):
        model.sparse_parameters()
    with pytest.raises(ValueError, match="pass history"):
        model.forward_user(torch.zeros(1, dtype=torch.int64), torch.zeros(1, 1))


def test_hybrid_refuses_several_processes_or_a_large_catalogue_before_training(
    prep: Prepared, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts: PartCache = {}
    with pytest.raises(ValueError, match="world_size 1"):
        fit(prep, TOWER, TRAIN.model_copy(update={"world_size": 2}), parts=parts)
    monkeypatch.setattr("model.pipeline.LINEAR_MAX_ITEMS", prep.vocab.n_items - 1)
    with pytest.raises(ValueError, match="use kind 'mlp'"):
        fit(prep, TOWER, TRAIN, parts=parts)
    assert parts == {}  # no MLP part was trained


def test_feature_scaling_of_a_hybrid_fits_both_parts(prep: Prepared) -> None:
    model = init_model(prep.vocab.tower_spec(prep.data, TOWER), 0)
    profile, content = prep.tables.user_profile[1:], prep.tables.item_content[1:]
    model.fit_feature_scaling(profile, content)
    user, item = model.user_tower, model.item_tower
    assert isinstance(user, HybridUserTower) and isinstance(item, HybridItemTower)
    torch.testing.assert_close(user.mlp.profile_norm.mean, profile.mean(dim=0))
    for part in (item.mlp, item.linear):
        torch.testing.assert_close(part.content_norm.mean, content.mean(dim=0))

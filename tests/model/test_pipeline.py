"""The shared recipe (model.pipeline) on the tiny synthetic world: the history feature,
mixed and hard negatives, early stopping that restores the best epoch, and pointwise
examples with sampled negatives."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from model.config import TowerConfig, TrainConfig
from model.dataset import temporal_split
from model.fullrank import evaluate_ranking
from model.pipeline import (
    Prepared,
    fit,
    model_scorer,
    prepare,
    sampled_pointwise,
    training_examples,
    validator,
)
from model.train import init_model, train
from tests.model.worlds import tiny_dataset

TOWER = TowerConfig(embedding_dim=32, id_dim=16, category_dim=8, hidden=(64,))
TRAIN = TrainConfig(epochs=3, batch_size=512, seed=0, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prep() -> Prepared:
    data = tiny_dataset()
    return prepare(data, temporal_split(data.inter_ts, 0.1, 0.1))


def _recall(prep: Prepared, score: object) -> float:
    d, split = prep.data, prep.split
    relevant, exclude = d.sets(split.test), d.sets(~split.test)
    metrics = evaluate_ranking(score, np.arange(d.n_users), d.n_items, relevant, exclude, ks=(50,))  # type: ignore[arg-type]
    return metrics["recall@50"]


def _popularity(prep: Prepared) -> float:
    d = prep.data
    pop = np.bincount(d.inter_item[prep.split.train], minlength=d.n_items).astype(np.float32)
    return _recall(prep, lambda rows: np.broadcast_to(pop, (len(rows), len(pop))))


def test_history_examples_are_item_rows_of_earlier_training_items(prep: Prepared) -> None:
    users, _, history = training_examples(prep, 4)
    assert history is not None and history.shape == (len(users), 4)
    assert history.min() >= 0 and history.max() <= prep.vocab.n_items
    d, mask = prep.data, prep.split.train
    ts = d.inter_ts[mask]
    pos = d.inter_item[mask]
    # Every history row names items the user took strictly earlier in training.
    rng = np.random.default_rng(0)
    for j in rng.choice(len(users), 200, replace=False):
        same_user = d.inter_user[mask] == d.inter_user[mask][j]
        earlier = set(prep.vocab.item_id_row[pos[same_user & (ts < ts[j])]].tolist())
        assert set(history[j][history[j] > 0].tolist()) <= earlier


def test_history_model_trains_beats_popularity_and_needs_history(prep: Prepared) -> None:
    model, result = fit(prep, TOWER.model_copy(update={"history_len": 5}), TRAIN)
    assert result.epochs[-1].loss < result.epochs[0].loss
    assert _recall(prep, model_scorer(model, prep, ~prep.split.test)) > 1.5 * _popularity(prep)
    with pytest.raises(ValueError, match="last 5 items"):
        model.forward_user(torch.tensor([1]), torch.zeros(1, prep.data.profile.shape[1]))


def test_mixed_and_hard_negatives_train_deterministically(prep: Prepared) -> None:
    cfg = TRAIN.model_copy(update={"uniform_negatives": 64, "hard_negatives": 4, "epochs": 2})
    model, result = fit(prep, TOWER, cfg)
    _, result2 = fit(prep, TOWER, cfg)
    assert [e.loss for e in result.epochs] == [e.loss for e in result2.epochs]
    assert np.isfinite(result.final_loss)
    assert _recall(prep, model_scorer(model, prep, ~prep.split.test)) > 1.5 * _popularity(prep)


def test_early_stopping_restores_the_best_epoch(prep: Prepared) -> None:
    model = init_model(prep.vocab.tower_spec(prep.data, TOWER), 0)
    users, items, _ = training_examples(prep, 0)
    scripted = iter([0.1, 0.3, 0.2, 0.25, 0.9])
    snapshots: list[torch.Tensor] = []

    def validate(m: object) -> float:
        snapshots.append(model.item_tower.mlp[0].weight.detach().clone())
        return next(scripted)

    cfg = TRAIN.model_copy(update={"epochs": 5, "early_stopping_patience": 2})
    result = train(model, prep.tables, users, items, cfg, validate=validate)
    assert [e.epoch for e in result.epochs] == [1, 2, 3, 4]  # 2 epochs without a gain
    assert result.best_epoch == 2 and result.stopped_early
    assert [e.val_metric for e in result.epochs] == [0.1, 0.3, 0.2, 0.25]
    assert torch.equal(model.item_tower.mlp[0].weight, snapshots[1])
    assert not torch.equal(snapshots[1], snapshots[3])


def test_early_stopping_without_validation_is_refused(prep: Prepared) -> None:
    model = init_model(prep.vocab.tower_spec(prep.data, TOWER), 0)
    users, items, _ = training_examples(prep, 0)
    cfg = TRAIN.model_copy(update={"early_stopping_patience": 1})
    with pytest.raises(ValueError, match="validate"):
        train(model, prep.tables, users, items, cfg)


def test_validator_measures_validation_recall(prep: Prepared) -> None:
    score = validator(prep, "recall@50", max_users=200, seed=0)
    assert score is not None
    untrained = init_model(prep.vocab.tower_spec(prep.data, TOWER), 0)
    untrained.fit_feature_scaling(prep.tables.user_profile[1:], prep.tables.item_content[1:])
    trained, _ = fit(prep, TOWER, TRAIN)
    assert 0.0 <= score(untrained) < score(trained) <= 1.0


def test_fit_with_early_stopping_keeps_best_validation(prep: Prepared) -> None:
    cfg = TRAIN.model_copy(update={"epochs": 4, "early_stopping_patience": 1})
    _, result = fit(prep, TOWER, cfg, validate_users=300)
    vals = [e.val_metric for e in result.epochs]
    assert all(v is not None for v in vals)
    assert result.best_epoch is not None
    assert vals[result.best_epoch - 1] == max(v for v in vals if v is not None)


def test_sampled_pointwise_has_negatives_that_are_not_training_positives(prep: Prepared) -> None:
    users, items, labels = sampled_pointwise(prep, negatives=3, seed=0)
    pos_users, pos_items, _ = training_examples(prep, 0)
    assert labels.sum() == len(pos_users)
    n_neg = int((labels == 0).sum())
    assert 2.5 * len(pos_users) < n_neg <= 3 * len(pos_users)
    seen = set(zip(pos_users.tolist(), pos_items.tolist(), strict=True))
    negatives = zip(users[labels == 0].tolist(), items[labels == 0].tolist(), strict=True)
    assert not any(pair in seen for pair in negatives)
    model, _ = fit(
        prep, TOWER, TRAIN.model_copy(update={"loss": "bce"}), pointwise=(users, items, labels)
    )
    assert _recall(prep, model_scorer(model, prep, ~prep.split.test)) > _popularity(prep)


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_baseline_regularisation_is_chosen_on_validation(prep: Prepared, kind: str) -> None:
    from model.baseline_tuning import tune_baseline
    from model.pipeline import validation_sets

    fitted, scores = tune_baseline(prep, kind, metric="recall@10", max_users=None)  # type: ignore[arg-type]
    assert fitted.name == kind and len(scores) >= 4
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    sets = validation_sets(prep, None, 0)
    assert sets is not None
    users, relevant, exclude = sets
    got = evaluate_ranking(fitted.scores, users, prep.data.n_items, relevant, exclude, ks=(10,))
    assert got["recall@10"] == pytest.approx(max(scores.values()))

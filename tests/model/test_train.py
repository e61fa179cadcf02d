"""The real training loop on the tiny synthetic world: the loss falls, the model beats
popularity on held-out recall, runs are reproducible, and bad input is refused."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
import torch

from model.config import LossKind, TowerConfig, TowerSpec, TrainConfig
from model.dataset import Dataset, Split, Vocabulary, temporal_split
from model.embed import embed_items, embed_users
from model.features import FeatureTables, category_rows
from model.fullrank import evaluate_ranking
from model.metrics import ScoreBlockFn
from model.synthetic import SyntheticData, generate, synthetic_config
from model.towers import TwoTower
from model.train import EpochStats, TrainResult, init_model, resolve_device, train

# Small towers and large batches keep each epoch well under a second on one core.
TOWER = TowerConfig(embedding_dim=32, id_dim=16, category_dim=8, hidden=(64,))
SOFTMAX = TrainConfig(epochs=4, batch_size=512, seed=0, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # With other processes on the same cores, intra-op threads spin against each other
    # (measured: 2 threads ran these epochs ~30x slower than 1).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class World:
    raw: SyntheticData
    data: Dataset
    split: Split
    vocab: Vocabulary
    tables: FeatureTables
    spec: TowerSpec

    def fresh_model(self, seed: int = 0) -> TwoTower:
        model = init_model(self.spec, seed)
        model.fit_feature_scaling(self.tables.user_profile[1:], self.tables.item_content[1:])
        return model

    def positives(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        train = self.split.train
        return (
            self.vocab.user_id_row[self.data.inter_user[train]],
            self.vocab.item_id_row[self.data.inter_item[train]],
        )

    def impressions(
        self,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Impressions before the validation cut whose user and item the vocabulary knows."""
        u = self.vocab.user_id_row[self.data.user_positions(self.raw.imp_user)]
        i = self.vocab.item_id_row[self.data.item_positions(self.raw.imp_item)]
        keep = (self.raw.imp_ts < self.split.t_val) & (u > 0) & (i > 0)
        return u[keep], i[keep], self.raw.imp_label[keep].astype(np.float32)


def _test_recall(world: World, score: ScoreBlockFn, k: int = 50) -> float:
    """Test recall@k of ``score`` with each user's train + validation items masked."""
    data, split = world.data, world.split
    relevant, exclude = data.sets(split.test), data.sets(~split.test)
    users = np.arange(data.n_users)
    metrics = evaluate_ranking(score, users, data.n_items, relevant, exclude, ks=(k,))
    assert metrics["n_users"] > 300
    return metrics[f"recall@{k}"]


def _popularity_recall(world: World) -> float:
    counts = np.bincount(world.data.inter_item[world.split.train], minlength=world.data.n_items)
    pop = counts.astype(np.float32)
    return _test_recall(world, lambda rows: np.broadcast_to(pop, (len(rows), len(pop))))


def _model_recall(world: World, model: TwoTower, cold_users: bool = False) -> float:
    """Test recall@50 of the towers over every item position; ``cold_users`` embeds every
    user through the unknown row, i.e. from the profile alone."""
    data, vocab = world.data, world.vocab
    item_vecs = embed_items(
        model, vocab.item_id_row, category_rows(data.category, data.n_categories), data.content
    )
    id_rows = np.zeros(data.n_users, np.int64) if cold_users else vocab.user_id_row
    user_vecs = embed_users(model, id_rows, data.profile)
    return _test_recall(world, lambda rows: user_vecs[rows] @ item_vecs.T)


def build_world(tower: TowerConfig = TOWER) -> World:
    """The tiny synthetic world with a temporal 8:1:1 split and ``tower``'s spec (also
    built in processes a test spawns, which cannot share a fixture)."""
    cfg = synthetic_config("tiny")
    raw = generate(cfg)
    data = Dataset.from_raw(
        raw.user_id, raw.profile, raw.item_id, raw.category, raw.content, cfg.n_categories,
        raw.inter_user, raw.inter_item, raw.inter_ts,
    )  # fmt: skip
    split = temporal_split(data.inter_ts, 0.1, 0.1)
    vocab = Vocabulary.from_training(data, split.train)
    spec = vocab.tower_spec(data, tower)
    return World(raw, data, split, vocab, vocab.feature_tables(data), spec)


@pytest.fixture(scope="module")
def world() -> World:
    return build_world()


@dataclass(frozen=True)
class Trained:
    model: TwoTower
    result: TrainResult
    reported: list[EpochStats]


@pytest.fixture(scope="module")
def trained(world: World) -> Trained:
    model = world.fresh_model()
    users, items = world.positives()
    reported: list[EpochStats] = []
    result = train(model, world.tables, users, items, SOFTMAX, on_epoch=reported.append)
    return Trained(model, result, reported)


def test_softmax_training_lowers_the_loss(trained: Trained) -> None:
    losses = [e.loss for e in trained.result.epochs]
    assert len(losses) == SOFTMAX.epochs
    assert all(np.isfinite(losses))
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < losses[0] - 0.5, losses
    assert trained.result.final_loss == losses[-1]
    assert trained.result.device == "cpu"
    assert not trained.model.training  # left in eval mode


def test_on_epoch_is_called_once_per_epoch_in_order(trained: Trained) -> None:
    assert trained.reported == trained.result.epochs
    assert [s.epoch for s in trained.reported] == list(range(1, SOFTMAX.epochs + 1))
    n = int(trained.reported[0].examples_per_s * trained.reported[0].seconds + 0.5)
    assert n > 9_000  # throughput is examples / seconds over the whole training split
    assert all(s.seconds > 0 and s.examples_per_s > 0 for s in trained.reported)


def test_trained_model_beats_popularity_on_held_out_recall(world: World, trained: Trained) -> None:
    popularity = _popularity_recall(world)
    model_recall = _model_recall(world, trained.model)
    untrained = _model_recall(world, world.fresh_model())
    assert model_recall >= 2 * popularity, (model_recall, popularity)
    assert model_recall > untrained + 0.2, (model_recall, untrained)


def test_cold_users_ranked_from_profile_alone_still_beat_popularity(
    world: World, trained: Trained
) -> None:
    # Every user through the unknown row: the profile path alone must carry the preference.
    cold = _model_recall(world, trained.model, cold_users=True)
    assert cold > 1.5 * _popularity_recall(world)


def test_same_seed_same_run_and_other_seed_another(world: World) -> None:
    users, items = world.positives()
    runs = []
    for train_seed in (1, 1, 2):
        model = world.fresh_model(seed=5)
        cfg = SOFTMAX.model_copy(update={"epochs": 2, "seed": train_seed})
        result = train(model, world.tables, users, items, cfg)
        runs.append(([e.loss for e in result.epochs], model.state_dict()))
    (loss_a, state_a), (loss_b, state_b), (loss_c, _) = runs
    assert loss_a == loss_b
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    assert loss_a != loss_c  # the seed drives shuffling and ID dropout


def test_training_leaves_the_global_rng_alone(world: World) -> None:
    users, items = world.positives()
    model = world.fresh_model()
    torch.manual_seed(99)
    before = torch.get_rng_state()
    cfg = SOFTMAX.model_copy(update={"epochs": 1})
    train(model, world.tables, users[:1025], items[:1025], cfg)  # last batch of 1 is skipped
    assert torch.equal(torch.get_rng_state(), before)


def test_bce_on_impressions_trains(world: World) -> None:
    users, items, labels = world.impressions()
    assert 0 < labels.mean() < 0.5  # clicks and non-clicks both present
    model = world.fresh_model()
    cfg = TrainConfig(loss="bce", epochs=3, batch_size=1024, seed=0, device="cpu")
    result = train(model, world.tables, users, items, cfg, labels=labels)
    losses = [e.loss for e in result.epochs]
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    # Below the loss of always predicting the base click rate.
    p = float(labels.mean())
    assert losses[-1] < -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert _model_recall(world, model) > 1.5 * _popularity_recall(world)


@pytest.mark.parametrize(
    ("n_users", "n_items", "loss", "labels", "message"),
    [
        (5, 4, "softmax", None, r"user_rows \(5\) and item_rows \(4\) differ"),
        (0, 0, "softmax", None, r"need at least 2 training examples, got 0"),
        (1, 1, "softmax", None, r"need at least 2 training examples, got 1"),
        (4, 4, "bce", None, "needs one label per example"),
        (4, 4, "bce", 3, "needs one label per example"),
    ],
)
def test_train_rejects_bad_input(
    world: World, n_users: int, n_items: int, loss: LossKind, labels: int | None, message: str
) -> None:
    model = world.fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(loss=loss, epochs=1, batch_size=2, device="cpu")
    y = None if labels is None else np.ones(labels, np.float32)
    with pytest.raises(ValueError, match=message):
        train(
            model,
            world.tables,
            np.ones(n_users, np.int64),
            np.ones(n_items, np.int64),
            cfg,
            labels=y,
        )
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_resolve_device_cuda_without_gpu_raises() -> None:
    with pytest.raises(RuntimeError, match="cuda"):
        resolve_device("cuda")


def test_full_softmax_trains_and_beats_popularity(world: World) -> None:
    model = world.fresh_model()
    users, items = world.positives()
    cfg = SOFTMAX.model_copy(update={"loss": "full_softmax", "epochs": 3})
    result = train(model, world.tables, users, items, cfg)
    losses = [e.loss for e in result.epochs]
    # The full softmax's loss starts near log(#items) and falls.
    assert losses[0] < np.log(world.spec.n_items) and losses[-1] < losses[0] - 0.3, losses
    assert _model_recall(world, model) > 1.5 * _popularity_recall(world)


def test_full_softmax_refuses_large_catalogues_and_sampled_negatives(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    users, items = world.positives()
    cfg = SOFTMAX.model_copy(update={"loss": "full_softmax", "epochs": 1})
    with pytest.raises(ValueError, match="uniform_negatives and hard_negatives must be 0"):
        train(
            world.fresh_model(),
            world.tables,
            users,
            items,
            cfg.model_copy(update={"uniform_negatives": 8}),
        )
    monkeypatch.setattr("model.train.FULL_SOFTMAX_MAX_ITEMS", world.spec.n_items - 1)
    with pytest.raises(ValueError, match="over its limit"):
        train(world.fresh_model(), world.tables, users, items, cfg)


def _id_norm(model: TwoTower) -> float:
    """Mean squared norm of the trained ID rows (row 0, the unknown bucket, excluded)."""
    rows = [model.user_tower.id_embedding.weight[1:], model.item_tower.id_embedding.weight[1:]]
    return float(sum(r.detach().square().sum(1).mean() for r in rows))


def test_id_l2_shrinks_the_id_tables(world: World) -> None:
    users, items = world.positives()
    norms = []
    for id_l2 in (0.0, 1.0):
        model = world.fresh_model()
        train(model, world.tables, users, items, SOFTMAX.model_copy(update={"id_l2": id_l2}))
        norms.append(_id_norm(model))
    plain, penalised = norms
    assert penalised < 0.5 * plain, norms


def test_weight_decay_shrinks_the_dense_layers(world: World) -> None:
    users, items = world.positives()

    def dense_norm(decay: float) -> float:
        model = world.fresh_model()
        cfg = SOFTMAX.model_copy(update={"weight_decay": decay, "lr": 1e-2})
        train(model, world.tables, users, items, cfg)
        return float(sum(p.detach().square().sum() for p in model.dense_parameters()))

    assert dense_norm(0.5) < 0.8 * dense_norm(0.0)


def test_tower_dropout_is_seeded_and_off_at_inference(world: World) -> None:
    users, items = world.positives()
    spec = world.spec.model_copy(update={"tower": TOWER.model_copy(update={"dropout": 0.3})})
    runs = []
    for _ in range(2):
        model = init_model(spec, 0)
        model.fit_feature_scaling(world.tables.user_profile[1:], world.tables.item_content[1:])
        result = train(model, world.tables, users, items, SOFTMAX.model_copy(update={"epochs": 2}))
        runs.append(([e.loss for e in result.epochs], model))
    (loss_a, model_a), (loss_b, model_b) = runs
    assert loss_a == loss_b  # the seed fixes the dropout masks too
    for key, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[key]), key
    plain = world.fresh_model()
    result = train(plain, world.tables, users, items, SOFTMAX.model_copy(update={"epochs": 2}))
    assert [e.loss for e in result.epochs] != loss_a  # dropout changed training
    # Same state_dict keys as a model without dropout (saved models stay loadable), and
    # the eval-mode tower is deterministic: dropout is off when embedding.
    assert model_a.state_dict().keys() == plain.state_dict().keys()
    rows = torch.arange(1, 50)
    t = world.tables
    first = model_a.forward_item(rows, t.item_category_rows[rows], t.item_content[rows])
    again = model_a.forward_item(rows, t.item_category_rows[rows], t.item_content[rows])
    assert torch.equal(first, again)
    assert _model_recall(world, model_a) > 1.5 * _popularity_recall(world)

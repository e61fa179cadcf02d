"""The in-memory recipe shared by the nightly tasks and the ablation: from a dataset and
its split to training examples, a trained model, and the score function evaluation ranks.

Everything a variant of the model needs (vocabulary, feature tables, the behaviour
history of every training example, validation for early stopping) is built here once,
so the nightly run and the ablation table cannot drift apart.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch

from model.config import TowerConfig, TrainConfig
from model.dataset import Dataset, Split, Vocabulary
from model.embed import embed_items, embed_users
from model.fast_rank import VectorScores
from model.features import FeatureTables, category_rows
from model.fullrank import evaluate_ranking
from model.history import PAD, history_before, latest_items
from model.hybrid import choose_blend, part_towers
from model.linear import LINEAR_MAX_ITEMS
from model.linear_train import fit_linear
from model.sets import CsrSets
from model.towers import TwoTower
from model.train import EpochStats, TrainResult, init_model, train

__all__ = [
    "PartCache",
    "Pointwise",
    "Prepared",
    "ScoreFn",
    "fit",
    "history_rows",
    "item_vectors",
    "model_scorer",
    "prepare",
    "sampled_pointwise",
    "training_examples",
    "user_vectors",
    "validation_sets",
    "validator",
    "vector_validator",
]

# (N,) user rows, (N,) item rows, (N,) float32 0/1 labels of pointwise (BCE) training.
Pointwise = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]

# (b,) user positions -> (b, n_items) scores, higher = better.
ScoreFn = Callable[[npt.NDArray[np.int64]], torch.Tensor]

# (U, D) user vectors, (I, D) item vectors -> a validation metric (higher = better).
VectorMetric = Callable[[npt.NDArray[np.float32], npt.NDArray[np.float32]], float]

# A hybrid's trained MLP parts by their recipe (``fit``'s ``parts``).
PartCache = dict[str, tuple[TwoTower, TrainResult]]

# Train settings only the linear part reads: they do not change the MLP part.
_LINEAR_ONLY = {"linear_l2", "linear_dropout"}

log = logging.getLogger(__name__)

# Score blocks are (block, n_items) float32 with a few temporaries: ~256 MB per block.
_SCORE_BLOCK_FLOATS = 1 << 24


def score_block_users(n_items: int) -> int:
    """Users per full-ranking block so one block stays near 64M floats of temporaries."""
    return int(np.clip(_SCORE_BLOCK_FLOATS // max(n_items, 1), 1, 1024))


@dataclass(frozen=True)
class Prepared:
    """A dataset with its split and the training vocabulary and feature tables."""

    data: Dataset
    split: Split
    vocab: Vocabulary
    tables: FeatureTables

    @property
    def item_category_rows(self) -> npt.NDArray[np.int64]:
        """(I,) category embedding rows of every item position."""
        return category_rows(self.data.category, self.data.n_categories)


def prepare(data: Dataset, split: Split) -> Prepared:
    """Vocabulary from the training split and the row-indexed feature tables."""
    vocab = Vocabulary.from_training(data, split.train)
    return Prepared(data, split, vocab, vocab.feature_tables(data))


def _to_rows(vocab: Vocabulary, positions: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Item positions (-1 = padding) -> item ID rows (0 = padding or unseen in training)."""
    rows = vocab.item_id_row[np.maximum(positions, 0)]
    return np.where(positions >= 0, rows, 0).astype(np.int64)


def history_rows(prep: Prepared, mask: npt.NDArray[np.bool_], n_last: int) -> npt.NDArray[np.int64]:
    """(U, W) item rows of every user's latest ``n_last`` interactions among ``mask``
    (0 = none): the history a user tower sees when scoring after those interactions.
    W = the longest such history (at most ``n_last``, at least 1), so a wide cap costs
    only what the users hold."""
    d = prep.data
    latest = latest_items(d.inter_user, d.inter_item, d.inter_ts, mask, n_last, d.n_users)
    return _to_rows(prep.vocab, latest.dense(np.arange(d.n_users, dtype=np.int64), PAD))


def training_examples(
    prep: Prepared, history_len: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
    """(N,) user rows, (N,) item rows and, with the history feature, (N, H) item rows of
    each example's user's items strictly before it (never the example or its future)."""
    d, train_mask = prep.data, prep.split.train
    users = prep.vocab.user_id_row[d.inter_user[train_mask]]
    items = prep.vocab.item_id_row[d.inter_item[train_mask]]
    if history_len == 0:
        return users, items, None
    pos = history_before(d.inter_user, d.inter_item, d.inter_ts, train_mask, history_len)
    return users, items, _to_rows(prep.vocab, pos)


def item_vectors(model: TwoTower, prep: Prepared) -> npt.NDArray[np.float32]:
    """(I, D) vectors of every item position (unseen items through the unknown row)."""
    return embed_items(model, prep.vocab.item_id_row, prep.item_category_rows, prep.data.content)


def user_vectors(
    model: TwoTower, prep: Prepared, history_mask: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float32]:
    """(U, D) vectors of every user position; the history feature (if any) reads the
    interactions selected by ``history_mask``."""
    history = None
    if model.history_len > 0:
        history = history_rows(prep, history_mask, model.history_len)
    return embed_users(model, prep.vocab.user_id_row, prep.data.profile, history)


def model_scorer(model: TwoTower, prep: Prepared, history_mask: npt.NDArray[np.bool_]) -> ScoreFn:
    """Full score rows (b, I) of the model for user positions (inner product, higher =
    better)."""
    return VectorScores.of(user_vectors(model, prep, history_mask), item_vectors(model, prep))


def validator(
    prep: Prepared, metric: str, max_users: int | None, seed: int
) -> Callable[[TwoTower], float] | None:
    """Full-ranking ``metric`` (e.g. 'recall@50') on the validation split with training
    items masked, over a seeded sample of at most ``max_users`` users; None when the
    split has no validation interactions."""
    of_vectors = vector_validator(prep, metric, max_users, seed)
    if of_vectors is None:
        return None
    score_vectors = of_vectors

    def score(model: TwoTower) -> float:
        return score_vectors(user_vectors(model, prep, prep.split.train), item_vectors(model, prep))

    return score


def vector_validator(
    prep: Prepared, metric: str, max_users: int | None, seed: int
) -> VectorMetric | None:
    """``validator`` on vectors: (U, D) user vectors of every user position (validation
    inputs) and (I, D) item vectors -> the validation ``metric`` of their inner product;
    None when the split has no validation interactions."""
    sets = validation_sets(prep, max_users, seed)
    if sets is None:
        return None
    users, relevant, exclude = sets
    k, n_items = int(metric.split("@")[1]), prep.data.n_items

    def score(user_vecs: npt.NDArray[np.float32], item_vecs: npt.NDArray[np.float32]) -> float:
        metrics = evaluate_ranking(
            VectorScores.of(user_vecs, item_vecs), users, n_items, relevant, exclude,
            ks=(k,), block_users=score_block_users(n_items),
        )  # fmt: skip
        return float(metrics[metric])

    return score


def validation_sets(
    prep: Prepared, max_users: int | None, seed: int
) -> tuple[npt.NDArray[np.int64], CsrSets, CsrSets] | None:
    """(sampled validation users, their validation items, their training items to mask),
    or None when the split has no validation interactions."""
    d, split = prep.data, prep.split
    relevant, exclude = d.sets(split.val), d.sets(split.train)
    users = np.flatnonzero(relevant.lengths() > 0)
    if len(users) == 0:
        return None
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return users, relevant, exclude


def fit(
    prep: Prepared,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    *,
    validate_metric: str = "recall@50",
    validate_users: int | None = 5000,
    on_epoch: Callable[[EpochStats], None] | None = None,
    pointwise: Pointwise | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
    parts: PartCache | None = None,
) -> tuple[TwoTower, TrainResult]:
    """Build, scale and train a model on the training split.

    Loss 'softmax' trains on the training interactions; loss 'bce' on ``pointwise``
    (user rows, item rows, 0/1 labels), e.g. labelled impressions or sampled negatives.
    Validation runs after every epoch when ``train_cfg.early_stopping_patience`` is set
    (and the split has a validation part); the best epoch's weights are kept.
    ``on_epoch`` / ``on_step``: progress callbacks, see ``model.train.train``.
    Kind 'hybrid' trains its two parts as alone and chooses their blend on validation
    (``_fit_hybrid``); ``parts`` keeps its MLP parts across calls (a tuner's trials
    that differ only in the linear part train the MLP once).
    """
    model = _scaled_model(prep, tower_cfg, train_cfg)
    if model.hybrid:
        result = _fit_hybrid(model, prep, train_cfg, (validate_metric, validate_users),
                             on_epoch, on_step, {} if parts is None else parts)  # fmt: skip
        return model, result
    if model.linear:
        validate_linear = validator(prep, validate_metric, validate_users, train_cfg.seed)
        result = _fit_linear(model, prep, train_cfg, validate_linear)
        if on_epoch is not None:
            on_epoch(result.epochs[0])
        return model, result
    labels = None
    if train_cfg.loss == "bce":
        if pointwise is None or tower_cfg.history_len > 0:
            raise ValueError("loss 'bce' needs pointwise examples and no history feature")
        users, items, labels = pointwise
        history = None
    else:
        users, items, history = training_examples(prep, tower_cfg.history_len)
    validate = None
    if train_cfg.early_stopping_patience is not None:
        validate = validator(prep, validate_metric, validate_users, train_cfg.seed)
        if validate is None:
            train_cfg = train_cfg.model_copy(update={"early_stopping_patience": None})
    result = train(
        model,
        prep.tables,
        users,
        items,
        train_cfg,
        labels=labels,
        on_epoch=on_epoch,
        history=history,
        validate=validate,
        on_step=on_step,
    )
    return model, result


def _scaled_model(prep: Prepared, tower_cfg: TowerConfig, train_cfg: TrainConfig) -> TwoTower:
    """A freshly initialised model for ``prep``'s vocabulary, its feature scaling fitted on
    the training tables."""
    model = init_model(prep.vocab.tower_spec(prep.data, tower_cfg), train_cfg.seed)
    model.fit_feature_scaling(prep.tables.user_profile[1:], prep.tables.item_content[1:])
    return model


def _fit_linear(
    model: TwoTower,
    prep: Prepared,
    train_cfg: TrainConfig,
    validate: Callable[[TwoTower], float] | None,
) -> TrainResult:
    """The closed-form fit of a linear model on each training user's latest items; its
    one "epoch" carries the ``validate`` metric when given."""
    bags = history_rows(prep, prep.split.train, model.history_len)
    result = fit_linear(model, prep.tables, bags, train_cfg)
    if validate is not None:
        model.eval()
        stats = result.epochs[0]
        result.epochs[0] = replace(stats, val_metric=validate(model))
    return result


def _fit_hybrid(
    model: TwoTower,
    prep: Prepared,
    train_cfg: TrainConfig,
    validation: tuple[str, int | None],
    on_epoch: Callable[[EpochStats], None] | None,
    on_step: Callable[[int, int, int], None] | None,
    parts: PartCache,
) -> TrainResult:
    """Train a hybrid's MLP part (SGD, early stopping as configured) and its linear part
    (closed form), each as alone, then choose their blend on validation
    (``model.hybrid.choose_blend``) and copy both into ``model``.

    The result holds the MLP part's epochs, then one for the linear fit and the blend:
    its loss is the linear fit's, its validation metric the chosen blend's, and it is
    the best epoch (the weights the model holds)."""
    # Refused before the MLP part trains, not after it.
    if train_cfg.world_size > 1:
        raise ValueError(
            "tower kind 'hybrid' fits its linear part in closed form in one process: world_size 1"
        )
    if model.spec.n_items > LINEAR_MAX_ITEMS:
        raise ValueError(
            f"tower kind 'hybrid' fits its linear part over a dense {model.spec.n_items:,}"
            f"-item solve; its limit is {LINEAR_MAX_ITEMS:,} items: use kind 'mlp'"
        )
    metric, max_users = validation
    mlp_tower, linear_tower = part_towers(model.spec.tower)
    recipe = [
        mlp_tower.model_dump(mode="json"),
        train_cfg.model_dump(mode="json", exclude=_LINEAR_ONLY),
    ]
    key = json.dumps(recipe, sort_keys=True)
    if key in parts:
        mlp, mlp_result = parts[key]
        for stats in mlp_result.epochs:  # as if trained now: progress and pruning see them
            if on_epoch is not None:
                on_epoch(stats)
    else:
        mlp, mlp_result = fit(
            prep, mlp_tower, train_cfg, validate_metric=metric, validate_users=max_users,
            on_epoch=on_epoch, on_step=on_step,
        )  # fmt: skip
        parts[key] = (mlp, mlp_result)
    # Not validated alone: the blend's share 1 is the linear part's validation.
    linear = _scaled_model(prep, linear_tower, train_cfg)
    linear_result = _fit_linear(linear, prep, train_cfg, None)
    split_train = prep.split.train
    choice = choose_blend(
        (user_vectors(mlp, prep, split_train), user_vectors(linear, prep, split_train)),
        (item_vectors(mlp, prep), item_vectors(linear, prep)),
        vector_validator(prep, metric, max_users, train_cfg.seed),
        train_cfg.seed,
    )
    model.load_parts(mlp, linear, choice.weights)
    model.eval()
    log.info(
        "hybrid: %s by the linear part's share (0: the MLP part, 1: the linear part): %s",
        metric,
        ", ".join(f"{a:g}: {v:.4f}" for a, v in choice.tried.items()) or "0.5 (no validation)",
    )
    fitted = linear_result.epochs[0]
    final = EpochStats(len(mlp_result.epochs) + 1, fitted.loss, fitted.seconds,
                       fitted.examples_per_s, choice.tried.get(choice.share))  # fmt: skip
    if on_epoch is not None:
        on_epoch(final)
    epochs = [*mlp_result.epochs, final]
    return TrainResult(mlp_result.device, epochs, best_epoch=len(epochs),
                       stopped_early=mlp_result.stopped_early, blend=choice.tried,
                       blend_share=choice.share)  # fmt: skip


def sampled_pointwise(prep: Prepared, negatives: int, seed: int) -> Pointwise:
    """Pointwise examples without impressions: every training positive (label 1) plus
    ``negatives`` uniformly drawn known items per positive (label 0; a draw that hits one
    of the user's training items is dropped)."""
    users, items, _ = training_examples(prep, 0)
    rng = np.random.default_rng(seed)
    neg_users = np.repeat(users, negatives)
    neg_items = rng.integers(1, prep.vocab.n_items + 1, len(neg_users))
    # Drop accidental positives: (user row, item row) pairs seen in training.
    key = users * (prep.vocab.n_items + 1) + items
    hit = np.isin(neg_users * (prep.vocab.n_items + 1) + neg_items, key)
    neg_users, neg_items = neg_users[~hit], neg_items[~hit]
    labels = np.concatenate([np.ones(len(users)), np.zeros(len(neg_users))]).astype(np.float32)
    return (
        np.concatenate([users, neg_users]),
        np.concatenate([items, neg_items]),
        labels,
    )

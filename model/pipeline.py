"""The in-memory recipe shared by the nightly tasks and the ablation: from a dataset and
its split to training examples, a trained model, and the score function evaluation ranks.

Everything a variant of the model needs (vocabulary, feature tables, the behaviour
history of every training example, validation for early stopping) is built here once,
so the nightly run and the ablation table cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import numpy.typing as npt
import torch

from model.baselines import EASE, Baseline, BaselineKind, ItemKNN, fit_baseline
from model.config import TowerConfig, TrainConfig
from model.dataset import Dataset, Split, Vocabulary
from model.embed import embed_items, embed_users
from model.fast_rank import VectorScores
from model.features import FeatureTables, category_rows
from model.fullrank import evaluate_ranking
from model.history import PAD, history_before, latest_items
from model.linear_train import fit_linear
from model.sets import CsrSets
from model.towers import TwoTower
from model.train import EpochStats, TrainResult, init_model, train

__all__ = [
    "Pointwise",
    "Prepared",
    "ScoreFn",
    "fit",
    "history_rows",
    "item_vectors",
    "model_scorer",
    "prepare",
    "refit_baseline",
    "sampled_pointwise",
    "training_examples",
    "tune_baseline",
    "user_vectors",
    "validation_sets",
    "validator",
]

# (N,) user rows, (N,) item rows, (N,) float32 0/1 labels of pointwise (BCE) training.
Pointwise = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]

# (b,) user positions -> (b, n_items) scores, higher = better.
ScoreFn = Callable[[npt.NDArray[np.int64]], torch.Tensor]

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
    d, split = prep.data, prep.split
    sets = validation_sets(prep, max_users, seed)
    if sets is None:
        return None
    users, relevant, exclude = sets
    k = int(metric.split("@")[1])

    def score(model: TwoTower) -> float:
        fn = model_scorer(model, prep, split.train)
        metrics = evaluate_ranking(
            fn,
            users,
            d.n_items,
            relevant,
            exclude,
            ks=(k,),
            block_users=score_block_users(d.n_items),
        )
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


def tune_baseline(
    prep: Prepared,
    kind: BaselineKind,
    *,
    metric: str = "recall@10",
    max_users: int | None = 5000,
    seed: int = 0,
    max_items: int = 25_000,
) -> tuple[Baseline, dict[str, float]]:
    """Fit the classical baseline on the training split with its regularisation chosen
    on validation (EASE: l2; ItemKNN: neighbours k), never on test.

    Returns the chosen fit and the validation ``metric`` of every candidate (by label).
    Without a validation split the library defaults are used.
    """
    d, train_mask = prep.data, prep.split.train
    args = (d.inter_user[train_mask], d.inter_item[train_mask], d.n_users, d.n_items)
    sets = validation_sets(prep, max_users, seed)
    if sets is None:
        return fit_baseline(kind, *args, max_items=max_items), {}
    users, relevant, exclude = sets
    k = int(metric.split("@")[1])
    n_active = len(np.unique(args[1]))
    if kind == "auto":
        kind = "ease" if n_active <= max_items else "itemknn"
        log.info("baseline: %s (%d trained items, EASE up to %d)", kind, n_active, max_items)
    grid = _candidates(prep, kind, max_items)
    scores: dict[str, float] = {}
    best: tuple[float, Baseline] | None = None
    for label, make in grid:
        fitted = make()
        metrics = evaluate_ranking(
            fitted.scores, users, d.n_items, relevant, exclude, ks=(k,),
            block_users=score_block_users(d.n_items),
        )  # fmt: skip
        scores[label] = float(metrics[metric])
        if best is None or scores[label] > best[0]:
            best = (scores[label], fitted)  # keep one fit at a time in memory
    assert best is not None
    log.info(
        "baseline %s on validation %s: %s",
        kind,
        metric,
        ", ".join(f"{name} {score:.4f}" for name, score in scores.items()),
    )
    return best[1], scores


def _candidates(
    prep: Prepared, kind: str, max_items: int
) -> list[tuple[str, Callable[[], Baseline]]]:
    """(label, fit) of every candidate ``tune_baseline`` tries for ``kind`` ('ease' or
    'itemknn'), fitting on the training split."""
    d, train_mask = prep.data, prep.split.train
    args = (d.inter_user[train_mask], d.inter_item[train_mask], d.n_users, d.n_items)
    if kind == "ease":
        return [
            (f"l2={l2:g}", partial(EASE.fit, *args, l2=l2, max_items=max_items)) for l2 in _EASE_L2
        ]
    return [(f"k={n}", partial(ItemKNN.fit, *args, k=n)) for n in _KNN_K]


def refit_baseline(prep: Prepared, name: str, label: str | None, max_items: int) -> Baseline:
    """The fit ``tune_baseline`` chose, again: baseline ``name`` ('ease' or 'itemknn') with
    the candidate ``label`` it reported best (e.g. 'l2=500'), or its library defaults when
    ``label`` is None (no validation split). Fits are deterministic, so a worker that
    refits gets the scores the tuning process had."""
    if label is None:
        d, train_mask = prep.data, prep.split.train
        args = (d.inter_user[train_mask], d.inter_item[train_mask], d.n_users, d.n_items)
        return fit_baseline(name, *args, max_items=max_items)  # type: ignore[arg-type]
    for candidate, make in _candidates(prep, name, max_items):
        if candidate == label:
            return make()
    raise ValueError(f"{label!r} is not a candidate of baseline {name!r}")


# Candidates tried on validation: EASE's l2 (Steck's range for ML-20M-sized data is
# 100..1000; small or popularity-heavy data can want less or more) and ItemKNN's k.
_EASE_L2 = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
_KNN_K = (50, 100, 200, 400)


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
) -> tuple[TwoTower, TrainResult]:
    """Build, scale and train a model on the training split.

    Loss 'softmax' trains on the training interactions; loss 'bce' on ``pointwise``
    (user rows, item rows, 0/1 labels), e.g. labelled impressions or sampled negatives.
    Validation runs after every epoch when ``train_cfg.early_stopping_patience`` is set
    (and the split has a validation part); the best epoch's weights are kept.
    ``on_epoch`` / ``on_step``: progress callbacks, see ``model.train.train``.
    """
    spec = prep.vocab.tower_spec(prep.data, tower_cfg)
    model = init_model(spec, train_cfg.seed)
    model.fit_feature_scaling(prep.tables.user_profile[1:], prep.tables.item_content[1:])
    if model.linear:
        result = _fit_linear(model, prep, train_cfg, validate_metric, validate_users)
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


def _fit_linear(
    model: TwoTower,
    prep: Prepared,
    train_cfg: TrainConfig,
    validate_metric: str,
    validate_users: int | None,
) -> TrainResult:
    """The closed-form fit of a linear model on each training user's latest items; its
    one "epoch" carries the validation metric when the split has a validation part."""
    bags = history_rows(prep, prep.split.train, model.history_len)
    result = fit_linear(model, prep.tables, bags, train_cfg)
    validate = validator(prep, validate_metric, validate_users, train_cfg.seed)
    if validate is not None:
        model.eval()
        stats = result.epochs[0]
        result.epochs[0] = replace(stats, val_metric=validate(model))
    return result


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

"""The search space of ``towerflow tune`` (``core.tuning``): which recipe knobs a trial
draws, in which ranges, and how a base config is placed in the space as a start point.
"""

from __future__ import annotations

from typing import Any

import optuna

from model.config import TowerConfig, TrainConfig

__all__ = ["DEFAULT_PATIENCE", "HIDDEN_CHOICES", "base_params", "base_values", "search_space"]

# Hidden layers as Optuna categories (strings: categories must be plain values).
HIDDEN_CHOICES: dict[str, tuple[int, ...]] = {
    "linear": (),
    "128": (128,),
    "256": (256,),
    "256-128": (256, 128),
}
# The space's categories and ranges, in one place (search_space and base_params).
_CHOICES: dict[str, list[Any]] = {
    "hidden": list(HIDDEN_CHOICES),
    # Wide, up to 512: retrieval quality on MovieLens-size logs keeps growing with the
    # dimension well past 64 (Rendle et al., "Revisiting the performance of iALS", 2022;
    # here, 256-wide linear towers beat the 64-wide default on validation).
    "embedding_dim": [32, 64, 128, 256, 512],
    "id_dim": [16, 32, 64, 128, 256, 512],
    "item_bias": [True, False],
    "batch_size": [256, 512, 1024, 2048],
    "patience": [2, 3, 5],
    "uniform_negatives": [0, 256, 1024, 4096],
    # The linear tower's rank (its embedding_dim): up to the 1024 Steck used on ML-20M.
    "rank": [128, 256, 512, 1024],
}
# Ranges where a first search on ml-latest-small found every good trial (dropouts above
# 0.3 or dense rates under 3e-4 never came within 20% of the best): a budget of tens of
# trials is better spent inside them.
_RANGES: dict[str, tuple[float, float]] = {
    "dropout": (0.0, 0.3),
    "temperature": (0.05, 0.5),
    "lr": (3e-4, 1e-2),
    "sparse_lr": (3e-3, 1e-1),
    "id_dropout": (0.0, 0.3),
    "weight_decay": (1e-6, 1e-1),
    "id_l2": (1e-6, 1e-1),
    # The linear tower's closed-form fit: EASE-like penalties (Steck: 100..1000 on ML-20M).
    "linear_l2": (10.0, 3000.0),
    "linear_dropout": (0.0, 0.9),
}
_LOG = {"temperature", "lr", "sparse_lr", "weight_decay", "id_l2", "linear_l2"}
# Patience used while tuning when the config has none: every trial needs early stopping,
# both to find its epoch and to be pruned.
DEFAULT_PATIENCE = 3


def search_space(
    trial: optuna.trial.BaseTrial, tower: TowerConfig, train: TrainConfig
) -> tuple[TowerConfig, TrainConfig]:
    """The recipe a trial draws, on top of the base configs (whose loss, epoch cap,
    history and device are kept). A linear base (tower kind 'linear') draws the linear
    space: rank, ``linear_l2`` and ``linear_dropout``; a hybrid base draws the same for
    its linear part (rank = ``linear_dim``) and keeps its MLP part, which then trains
    once for the whole search (``model.pipeline.fit``'s part cache). Log scales for
    rates and penalties (their effect is multiplicative); a penalty near the bottom of its
    range is in effect off."""

    def cat(name: str) -> Any:
        return trial.suggest_categorical(name, _CHOICES[name])

    def num(name: str) -> float:
        lo, hi = _RANGES[name]
        return trial.suggest_float(name, lo, hi, log=name in _LOG)

    if tower.kind in ("linear", "hybrid"):
        # A closed-form fit: no rates, batches or epochs; its rank and two penalties.
        rank_field = "embedding_dim" if tower.kind == "linear" else "linear_dim"
        return (
            tower.model_copy(update={rank_field: cat("rank")}),
            train.model_copy(
                update={"linear_l2": num("linear_l2"), "linear_dropout": num("linear_dropout")}
            ),
        )

    tower_update = {
        "embedding_dim": cat("embedding_dim"),
        "id_dim": cat("id_dim"),
        "hidden": HIDDEN_CHOICES[cat("hidden")],
        "item_bias": cat("item_bias"),
        "dropout": num("dropout"),
    }
    train_update: dict[str, Any] = {
        "temperature": num("temperature"),
        "lr": num("lr"),
        "sparse_lr": num("sparse_lr"),
        "batch_size": cat("batch_size"),
        "id_dropout": num("id_dropout"),
        "weight_decay": num("weight_decay"),
        "id_l2": num("id_l2"),
        "early_stopping_patience": cat("patience"),
    }
    if train.loss == "softmax":
        # Sampled softmax only: the full softmax already scores every item, and the
        # pointwise loss has no in-batch negatives to correct.
        train_update["uniform_negatives"] = cat("uniform_negatives")
        train_update["logq_correction"] = True
    return tower.model_copy(update=tower_update), train.model_copy(update=train_update)


def base_values(tower: TowerConfig, train: TrainConfig) -> dict[str, Any]:
    """The base recipe in ``search_space``'s parameter names, as it trains (trial 0's row
    in the trial table)."""
    if tower.kind in ("linear", "hybrid"):
        return {
            "rank": tower.embedding_dim if tower.kind == "linear" else tower.linear_dim,
            "linear_l2": train.linear_l2,
            "linear_dropout": train.linear_dropout,
        }
    hidden = next((k for k, v in HIDDEN_CHOICES.items() if v == tuple(tower.hidden)), None)
    return {
        "embedding_dim": tower.embedding_dim,
        "id_dim": tower.id_dim,
        "hidden": hidden or "-".join(map(str, tower.hidden)),
        "item_bias": tower.item_bias,
        "dropout": tower.dropout,
        "temperature": train.temperature,
        "lr": train.lr,
        "sparse_lr": train.sparse_lr,
        "batch_size": train.batch_size,
        "id_dropout": train.id_dropout,
        "patience": train.early_stopping_patience,
        "uniform_negatives": train.uniform_negatives,
        "weight_decay": train.weight_decay,
        "id_l2": train.id_l2,
    }


def base_params(tower: TowerConfig, train: TrainConfig) -> dict[str, Any]:
    """``base_values`` as Optuna can enqueue them: penalties that are off stand at the
    bottom of their range, and values the space cannot express (a hidden shape not in
    HIDDEN_CHOICES, a rate out of range) are left out for Optuna to draw. Trial 0 still
    trains the base recipe exactly; these only place it in the space for the sampler."""
    if tower.kind in ("linear", "hybrid"):
        params = base_values(tower, train)
        return {k: v for k, v in params.items() if _expressible(k, v)}
    params = base_values(tower, train) | {
        "patience": train.early_stopping_patience or DEFAULT_PATIENCE,
        "weight_decay": max(train.weight_decay, 1e-6),
        "id_l2": max(train.id_l2, 1e-6),
    }
    # Optuna fails a trial whose enqueued value is not one of its choices or in its range.
    return {k: v for k, v in params.items() if _expressible(k, v)}


def _expressible(name: str, value: Any) -> bool:
    choices = _CHOICES.get(name)
    if choices is not None:
        return value in choices
    lo, hi = _RANGES[name]
    return bool(lo <= value <= hi)

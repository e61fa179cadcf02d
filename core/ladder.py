"""The ablation ladder's rungs: model variants as overrides of the tower and training
configs, and the protocol rule that leaves some of them out.

Plain data and rules (no training, no I/O), so both the ablation (``core.ablation``) and the
nightly's recipe choice (``core.recipes``) read the same rungs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from model.config import FULL_SOFTMAX_MAX_ITEMS, TowerConfig, TrainConfig
from model.linear import LINEAR_MAX_ITEMS

__all__ = [
    "HISTORY_UNDER_RANDOM",
    "HYBRID",
    "HYBRID_TRAIN",
    "LINEAR",
    "LINEAR_TRAIN",
    "WIDE",
    "Variant",
    "catalogue_skip",
    "ladder",
    "protocol_skip",
]


@dataclass(frozen=True)
class Variant:
    """One model variant: overrides of the base tower and training configs."""

    name: str
    tower: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


# The "+ wide" rung's tower: 256-dim output and ID embeddings, no hidden layer.
WIDE: dict[str, Any] = {"embedding_dim": 256, "id_dim": 256, "hidden": ()}
# The linear rung (docs/linear.md): rank and penalties as `towerflow tune --kind linear`
# chose them on the validation split of ml-latest-small (seed 2020; seed 1 chose the
# same). The bag is the user's whole history up to 5,000 items: a cap of 1,000 cut that
# log's heaviest users and cost 0.004 test NDCG@10; serving holds each user's own items
# (model.history.RaggedRows), so the cap costs only what users hold.
LINEAR: dict[str, Any] = {"kind": "linear", "embedding_dim": 1024, "history_len": 5000,
                          "item_bias": False}  # fmt: skip
LINEAR_TRAIN: dict[str, Any] = {"linear_l2": 196.0, "linear_dropout": 0.37}
# The hybrid rung (docs/hybrid.md): the linear rung beside the "+ wide" MLP (the best SGD
# rung on ml-latest-small), each trained as alone, their blend chosen on validation.
HYBRID: dict[str, Any] = {"kind": "hybrid", "item_bias": True, **WIDE,
                          "linear_dim": LINEAR["embedding_dim"],
                          "history_len": LINEAR["history_len"]}  # fmt: skip
HYBRID_TRAIN: dict[str, Any] = {**LINEAR_TRAIN, "uniform_negatives": 1024}


def ladder(uniform_negatives: int = 1024, history_len: int = 20, hard: int = 0) -> list[Variant]:
    """The standard ladder, each rung adding one ingredient to the one before:
    pointwise BCE (as in the seed) -> in-batch softmax -> + logQ correction -> + item bias
    (the learned per-item offset slot) -> + mixed (uniform) negatives -> + behaviour
    history [-> + hard negatives when ``hard`` > 0]. Beside them, each one ingredient away
    from "+ mixed negatives": "+ wide" (256-dim linear towers) and the full softmax over
    every item (skipped by ``run_ablation`` above ``FULL_SOFTMAX_MAX_ITEMS`` items); then
    the linear tower and the hybrid of it and "+ wide"."""
    plain = {"item_bias": False}
    mixed = {"uniform_negatives": uniform_negatives}
    history = {"history_len": history_len}
    rungs = [
        Variant("bce pointwise", tower=plain, train={"loss": "bce"}),
        Variant("in-batch softmax", tower=plain, train={"logq_correction": False}),
        Variant("+ logQ", tower=plain, train={"logq_correction": True}),
        Variant("+ item bias", tower={"item_bias": True}, train={"logq_correction": True}),
        Variant("+ mixed negatives", tower={"item_bias": True}, train=mixed),
        # Width: retrieval quality on MovieLens-size logs keeps growing with the dimension
        # well past 64 (Rendle et al. 2022, iALS revisited); 256-wide ID embeddings and a
        # linear projection (no hidden layer to narrow the rank).
        Variant("+ wide", tower={"item_bias": True, **WIDE}, train=mixed),
        # The exact objective the sampled rungs estimate: every trained item is a candidate
        # (no sampling bias at all); only on catalogues of at most FULL_SOFTMAX_MAX_ITEMS.
        Variant(
            "full softmax",
            tower={"item_bias": True},
            train={"loss": "full_softmax", "uniform_negatives": 0},
        ),
        Variant("+ history", tower={"item_bias": True, **history}, train=mixed),
        # The strongest rankers on MovieLens-size logs are linear item-item models (EASE);
        # their best low-rank form is a two-tower: the user's items summed through an input
        # table, fitted in closed form (model.linear). Only up to LINEAR_MAX_ITEMS items.
        Variant("linear", tower=LINEAR, train=LINEAR_TRAIN),
        # Both evidence sources: the bag (linear) and the IDs and features (MLP), side by
        # side in one vector, weighted on validation (model.hybrid).
        Variant("hybrid", tower=HYBRID, train={**HYBRID_TRAIN, **mixed}),
    ]
    if hard > 0:
        rungs.append(
            Variant(
                "+ hard negatives",
                tower={"item_bias": True, **history},
                train={**mixed, "hard_negatives": hard},
            )
        )
    return rungs


# Why a sequence feature sits out a per-user random split (measured in docs/history.md).
HISTORY_UNDER_RANDOM = (
    "left out under random_ratio: the history feature learns which item follows the last "
    "ones, and a random split's test items are not the next clicks (docs/history.md)"
)


def protocol_skip(variant: Variant, protocol: str) -> str | None:
    """Why ``variant`` is left out under ``protocol``, or None when it runs: rungs with
    the behaviour-history feature do not run under ``random_ratio``. The linear tower
    (alone or in a hybrid, whose MLP part has no history feature) reads the user's items
    as a bag, not a sequence, and always runs."""
    linear = variant.tower.get("kind") in ("linear", "hybrid")
    if protocol == "random_ratio" and variant.tower.get("history_len", 0) > 0 and not linear:
        return HISTORY_UNDER_RANDOM
    return None


def catalogue_skip(tower: TowerConfig, train: TrainConfig, n_items: int) -> str | None:
    """Why a recipe cannot train on ``n_items`` trained items (a full softmax or a
    closed-form linear fit over its limit), or None when it can."""
    if train.loss == "full_softmax" and n_items > FULL_SOFTMAX_MAX_ITEMS:
        return (
            f"{n_items:,} trained items is over the full softmax's limit of "
            f"{FULL_SOFTMAX_MAX_ITEMS:,}"
        )
    if tower.kind in ("linear", "hybrid") and n_items > LINEAR_MAX_ITEMS:
        return (
            f"{n_items:,} trained items is over the {tower.kind} tower's closed-form limit of "
            f"{LINEAR_MAX_ITEMS:,}"
        )
    return None

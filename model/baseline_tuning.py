"""The classical baseline tuned on validation (EASE's l2, ItemKNN's neighbours), never on
test: the reference every two-tower recipe is compared with."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import numpy as np

from model.baselines import EASE, Baseline, BaselineKind, ItemKNN, fit_baseline
from model.fullrank import evaluate_ranking
from model.pipeline import Prepared, score_block_users, validation_sets

__all__ = ["refit_baseline", "tune_baseline"]

log = logging.getLogger(__name__)


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

"""The classical baseline of the evaluation (EASE or ItemKNN): tuned on validation, or
refitted as an earlier tuning chose (what evaluation shards do, ``core.sharded_eval``)."""

from __future__ import annotations

import logging

import torch
from pydantic import BaseModel, ConfigDict

from core.config import EvalConfig
from model.baseline_tuning import refit_baseline, tune_baseline
from model.baselines import Baseline
from model.pipeline import Prepared, ScoreFn

__all__ = ["BaselineChoice", "baseline_scorer", "choose_baseline"]

log = logging.getLogger(__name__)


class BaselineChoice(BaseModel):
    """The classical baseline chosen on validation: its ``name`` ('ease' or 'itemknn'), the
    winning candidate's ``label`` (None: no validation split, library defaults) and the
    validation metric of every candidate. Small, so a plan can hand it to workers, which
    refit it (``model.pipeline.refit_baseline``) instead of tuning again."""

    model_config = ConfigDict(frozen=True)

    name: str
    label: str | None
    tuning: dict[str, float] = {}


def _baseline_skipped(prep: Prepared, cfg: EvalConfig) -> bool:
    if cfg.baseline == "none":
        return True
    if prep.data.n_items > cfg.baseline_max_items:
        log.info(
            "classical baseline skipped: %d items > baseline_max_items=%d",
            prep.data.n_items,
            cfg.baseline_max_items,
        )
        return True
    return False


def _tuned_baseline(prep: Prepared, cfg: EvalConfig) -> tuple[Baseline, BaselineChoice]:
    kind = cfg.baseline
    if kind == "none":
        raise ValueError("evaluation.baseline is 'none': there is no baseline to tune")
    fitted, tuning = tune_baseline(
        prep,
        kind,
        metric=cfg.validation_metric,
        max_users=cfg.validation_users,
        seed=cfg.seed,
        max_items=cfg.ease_max_items,
    )
    # tune_baseline keeps the first best candidate, as max() does over the dict's order.
    label = max(tuning, key=tuning.__getitem__) if tuning else None
    return fitted, BaselineChoice(name=fitted.name, label=label, tuning=tuning)


def choose_baseline(prep: Prepared, cfg: EvalConfig) -> BaselineChoice | None:
    """Tune the classical baseline ``cfg.baseline`` on validation and say which fit won;
    None for 'none' or above ``cfg.baseline_max_items``."""
    return None if _baseline_skipped(prep, cfg) else _tuned_baseline(prep, cfg)[1]


def baseline_scorer(
    prep: Prepared, cfg: EvalConfig, choice: BaselineChoice | None = None
) -> tuple[str, ScoreFn, dict[str, float]] | None:
    """The classical collaborative filter ``cfg.baseline``, fitted on the training split
    with its regularisation chosen on validation (or refitted as ``choice`` says), scoring
    each user from everything known before the test (train + validation), as (its name, a
    score function, validation metric per candidate); None for 'none' or above
    ``cfg.baseline_max_items``."""
    d = prep.data
    if _baseline_skipped(prep, cfg):
        return None
    if choice is None:
        fitted, choice = _tuned_baseline(prep, cfg)
    else:
        fitted = refit_baseline(prep, choice.name, choice.label, cfg.ease_max_items)
    known = ~prep.split.test  # what is known when the test period starts
    scoring = fitted.with_inputs(d.inter_user[known], d.inter_item[known])
    return scoring.name, lambda rows: torch.from_numpy(scoring.scores(rows)), dict(choice.tuning)

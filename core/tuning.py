"""Automatic tuning of the training recipe on validation, with Optuna.

Each trial draws a recipe from ``search_space`` (temperature, learning rates, tower sizes,
negatives, batch size, regularisation, dropout, early-stopping patience), trains it on
the snapshot's training split and scores it by ``EvalConfig.validation_metric`` on the
validation split, the same full ranking the ablation chooses its rung by. Test data is
never read while searching: once the search ends, the best recipe and the base recipe
(trial 0, always the config as given) are ranked on test next to popularity and the
classical baseline, to report what the choice is worth.

Why Optuna: a well-kept library with a seeded TPE sampler (reproducible searches),
pruning of hopeless trials from their per-epoch validation curve (a percentile rule), and
budgets in trials or wall time, none of which a hand-rolled grid has.

The budget: ``TuneBudget.trials`` and/or ``TuneBudget.minutes``; Optuna checks the time
between trials, so the last trial may run past it by one trial's length.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from core.config import NightlyConfig
from core.dataio import load_prepared
from core.evaluation import rank_all, reference_scorers
from core.progress import Progress
from core.snapshots import ensure_snapshot
from core.threads import apply_threads
from core.tuning_space import DEFAULT_PATIENCE, base_params, base_values, search_space
from model.config import TowerConfig, TrainConfig
from model.pipeline import PartCache, Prepared, fit, model_scorer
from model.towers import TwoTower
from model.train import EpochStats
from storage import Layout, snapshot_path

__all__ = [
    "TuneBudget",
    "TuneResult",
    "TuneTrial",
    "run_tuning",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneBudget:
    """Stop after ``trials`` trials or ``minutes`` of wall time, whichever comes first
    (None = no limit of that kind; at least one must be set)."""

    trials: int | None = 30
    minutes: float | None = None

    def __post_init__(self) -> None:
        if self.trials is None and self.minutes is None:
            raise ValueError("a tuning budget needs trials or minutes (or both)")
        if self.trials is not None and self.trials < 1:
            raise ValueError(f"trials must be at least 1, got {self.trials}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")


@dataclass(frozen=True)
class TuneTrial:
    """One trial: its state ('complete', 'pruned' or 'fail'), the validation metric of
    its kept weights (the best epoch's; for a pruned trial the last epoch it reached),
    epochs run, the kept epoch, wall seconds and the sampled parameters."""

    number: int
    state: str
    validation: float | None
    epochs: int
    best_epoch: int | None
    seconds: float
    params: dict[str, Any]
    error: str | None = None


@dataclass
class TuneResult:
    """The search and what it found: every trial, the chosen recipe (best validation; trial
    0 is the base recipe), and the test metrics of the base and tuned models next to the
    reference rankers (``rankers``: 'base recipe', 'tuned', 'popularity', the baseline...)."""

    snapshot_id: str
    protocol: str
    validation_metric: str
    trials: list[TuneTrial]
    best_number: int
    tower: TowerConfig
    train: TrainConfig
    seconds: float
    n_users: int = 0
    n_items: int = 0
    rankers: dict[str, dict[str, float]] = field(default_factory=dict)
    baseline_tuning: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> TuneTrial:
        return next(t for t in self.trials if t.number == self.best_number)

    @property
    def base(self) -> TuneTrial:
        return self.trials[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "protocol": self.protocol,
            "validation_metric": self.validation_metric,
            "best_trial": self.best_number,
            "seconds": self.seconds,
            "tower": self.tower.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "trials": [vars(t) for t in self.trials],
            "n_users": self.n_users,
            "n_items": self.n_items,
            "rankers": self.rankers,
            "baseline_tuning": self.baseline_tuning,
        }


class _Keeper:
    """Holds the weights of trial 0 (the base recipe) and of the best trial so far, on
    the CPU: two models at most, whatever the number of trials."""

    def __init__(self) -> None:
        self.models: dict[int, TwoTower] = {}
        self.best: tuple[float, int] | None = None

    def offer(self, number: int, score: float, model: TwoTower) -> None:
        if number == 0:
            self.models[0] = model
        if self.best is None or score > self.best[0]:
            if self.best is not None and self.best[1] != 0:
                self.models.pop(self.best[1], None)
            self.best = (score, number)
            self.models[number] = model


def _objective(
    prep: Prepared, cfg: NightlyConfig, keeper: _Keeper, records: list[TuneTrial]
) -> Callable[[optuna.Trial], float]:
    """The study's objective: train the trial's recipe, report each epoch's validation
    metric to the pruner, and return the kept epoch's; every trial lands in ``records``."""
    metric = cfg.evaluation.validation_metric
    users = cfg.evaluation.validation_users
    # A hybrid's trials share its MLP part (the space draws only the linear part's):
    # trained once, by the first trial, and reused.
    parts: PartCache = {}

    def objective(trial: optuna.Trial) -> float:
        tower, train = search_space(trial, cfg.tower, cfg.train)
        if trial.number == 0:
            # The base recipe exactly (the space stands in for "off" with a tiny penalty).
            tower, train = cfg.tower, cfg.train
        start = time.perf_counter()
        seen: list[EpochStats] = []

        def on_epoch(stats: EpochStats) -> None:
            seen.append(stats)
            if stats.val_metric is None:
                return
            trial.report(stats.val_metric, stats.epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {stats.epoch}: {metric} {stats.val_metric:.4f}")

        def record(state: str, value: float | None, best: int | None, error: str | None) -> None:
            # Trial 0 trained the base recipe: its values, not the sampler's stand-ins.
            params = base_values(tower, train) if trial.number == 0 else dict(trial.params)
            records.append(
                TuneTrial(
                    trial.number,
                    state,
                    value,
                    len(seen),
                    best,
                    time.perf_counter() - start,
                    params,
                    error,
                )
            )

        try:
            model, result = fit(
                prep, tower, train, validate_metric=metric, validate_users=users,
                on_epoch=on_epoch, parts=parts,
            )  # fmt: skip
        except optuna.TrialPruned:
            last = seen[-1].val_metric if seen else None
            record("pruned", last, None, None)
            log.info("trial %d pruned after %d epoch(s)", trial.number, len(seen))
            raise
        except (ValueError, RuntimeError) as e:
            # A recipe that cannot train (e.g. diverged to NaN) fails its trial, not the
            # search; the error is kept in the trial table.
            record("fail", None, None, f"{type(e).__name__}: {e}")
            log.warning("trial %d failed: %s", trial.number, e)
            raise
        best = result.best_epoch
        score = result.epochs[best - 1].val_metric if best is not None else None
        if score is None or not math.isfinite(score):
            record("fail", None, best, "no validation score")
            raise RuntimeError(f"trial {trial.number}: no validation score")
        record("complete", score, best, None)
        keeper.offer(trial.number, score, model)
        log.info(
            "trial %d: validation %s %.4f (best epoch %d of %d, %.0f s)",
            trial.number, metric, score, best, len(seen), time.perf_counter() - start,
        )  # fmt: skip
        return score

    return objective


def run_tuning(
    cfg: NightlyConfig,
    root: str,
    budget: TuneBudget,
    *,
    seed: int = 0,
    threads: int | None = None,
    evaluate: bool = True,
) -> TuneResult:
    """Search ``cfg``'s training recipe on its snapshot's validation split under ``root``.

    Trial 0 is the base recipe (``cfg.tower`` / ``cfg.train``), so the search can only
    keep or beat it on validation. ``seed`` seeds the sampler; each trial trains with
    ``cfg.train.seed``. With ``evaluate`` the base and best models are then ranked on
    test with popularity and the classical baseline (``TuneResult.rankers``).
    Raises ValueError when the split has no validation part (nothing to tune on).
    """
    apply_threads(threads)
    snapshot = ensure_snapshot(root, cfg.data)
    folder = snapshot_path(Layout(Path(root)), snapshot.snapshot_id)
    prep = load_prepared(folder, cfg.data)
    if not prep.split.val.any():
        raise ValueError(
            f"protocol {prep.split.protocol!r} left no validation interactions: tuning "
            "chooses on validation and will not choose on test"
        )
    if cfg.train.early_stopping_patience is None:
        cfg = cfg.model_copy(
            update={
                "train": cfg.train.model_copy(update={"early_stopping_patience": DEFAULT_PATIENCE})
            }
        )
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    # A trial is pruned when, from its 5th epoch on, its best validation so far is below
    # the lower quartile of the completed trials at the same epoch (Optuna's percentile
    # keeps the top `percentile` %: 75 prunes the bottom quarter). Not the median rule:
    # only completed trials count, and they are the strong ones.
    pruner = optuna.pruners.PercentilePruner(75.0, n_startup_trials=5, n_warmup_steps=4)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    # Trial 0: the config's recipe. Trial 1 (sampled softmax): the same with the ablation
    # ladder's strongest sampled ingredients, item bias and 1,024 mixed negatives. A
    # linear base searches its own space (rank and penalties) from trial 1 on.
    base = base_params(cfg.tower, cfg.train)
    study.enqueue_trial(base)
    if cfg.train.loss == "softmax" and cfg.tower.kind == "mlp":
        ladder_rung = base | {"item_bias": True, "uniform_negatives": 1024}
        study.enqueue_trial(ladder_rung)
        # Trial 2: the same, wide and linear (256-dim ID embeddings and output).
        study.enqueue_trial(ladder_rung | {"embedding_dim": 256, "id_dim": 256, "hidden": "linear"})
    keeper: _Keeper = _Keeper()
    records: list[TuneTrial] = []
    start = time.perf_counter()
    # A bar over trials, or over minutes when only time bounds the search.
    if budget.trials is not None:
        bar = Progress("tune-progress", "tune (trials)", budget.trials, "trials")
    else:
        bar = Progress("tune-progress", "tune (minutes)", budget.minutes or 1, "minutes")

    def advance(study: optuna.Study, _: optuna.trial.FrozenTrial) -> None:
        done = len(study.trials) if budget.trials else (time.perf_counter() - start) / 60
        bar.update(done)

    study.optimize(
        _objective(prep, cfg, keeper, records),
        n_trials=budget.trials,
        timeout=None if budget.minutes is None else budget.minutes * 60,
        catch=(ValueError, RuntimeError),
        callbacks=[advance],
    )
    seconds = time.perf_counter() - start
    bar.update(bar.total, force=True)
    if keeper.best is None:
        raise RuntimeError(f"no trial of {len(records)} completed: see the trial errors")
    best_number = keeper.best[1]
    if best_number == 0:
        tower, train = cfg.tower, cfg.train
    else:
        params = study.trials[best_number].params
        tower, train = search_space(optuna.trial.FixedTrial(params), cfg.tower, cfg.train)
    result = TuneResult(
        snapshot.snapshot_id,
        prep.split.protocol,
        cfg.evaluation.validation_metric,
        sorted(records, key=lambda t: t.number),
        best_number,
        tower,
        train,
        seconds,
    )
    if evaluate:
        _rank_on_test(result, prep, folder, cfg, keeper)
    return result


def _rank_on_test(
    result: TuneResult, prep: Prepared, folder: Path, cfg: NightlyConfig, keeper: _Keeper
) -> None:
    """Test metrics of the base and tuned models beside the references, after the search
    (the only time test data is read)."""
    history = ~prep.split.test
    scorers = {}
    with torch.no_grad():
        if 0 in keeper.models:
            scorers["base recipe"] = model_scorer(keeper.models[0], prep, history)
        scorers["tuned"] = model_scorer(keeper.models[result.best_number], prep, history)
    tuning: dict[str, float] = {}
    scorers |= reference_scorers(prep, folder, cfg.evaluation, tuning)
    ranked = rank_all(prep, scorers, cfg.evaluation)
    result.n_users, result.rankers, result.baseline_tuning = ranked.n_users, ranked.rankers, tuning
    result.n_items = prep.data.n_items

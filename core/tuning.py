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
from model.config import TowerConfig, TrainConfig
from model.pipeline import Prepared, fit, model_scorer
from model.towers import TwoTower
from model.train import EpochStats
from storage import Layout, snapshot_path

__all__ = [
    "HIDDEN_CHOICES",
    "TuneBudget",
    "TuneResult",
    "TuneTrial",
    "run_tuning",
    "search_space",
]

log = logging.getLogger(__name__)

# Hidden layers as Optuna categories (strings: categories must be plain values).
HIDDEN_CHOICES: dict[str, tuple[int, ...]] = {
    "linear": (),
    "128": (128,),
    "256": (256,),
    "256-128": (256, 128),
}
# The space's categories and ranges, in one place (search_space and _base_params).
_CHOICES: dict[str, list[Any]] = {
    "hidden": list(HIDDEN_CHOICES),
    "embedding_dim": [32, 64, 128],
    "id_dim": [16, 32, 64, 128],
    "item_bias": [True, False],
    "batch_size": [256, 512, 1024, 2048],
    "patience": [2, 3, 5],
    "uniform_negatives": [0, 256, 1024, 4096],
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
}
_LOG = {"temperature", "lr", "sparse_lr", "weight_decay", "id_l2"}
# Patience used while tuning when the config has none: every trial needs early stopping,
# both to find its epoch and to be pruned.
_DEFAULT_PATIENCE = 3


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


def search_space(
    trial: optuna.trial.BaseTrial, tower: TowerConfig, train: TrainConfig
) -> tuple[TowerConfig, TrainConfig]:
    """The recipe a trial draws, on top of the base configs (whose loss, epoch cap,
    history and device are kept). Log scales for rates and penalties (their effect is
    multiplicative); a penalty near the bottom of its range is in effect off."""

    def cat(name: str) -> Any:
        return trial.suggest_categorical(name, _CHOICES[name])

    def num(name: str) -> float:
        lo, hi = _RANGES[name]
        return trial.suggest_float(name, lo, hi, log=name in _LOG)

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


def _base_params(tower: TowerConfig, train: TrainConfig) -> dict[str, Any]:
    """The base recipe in ``search_space``'s parameter names, for trial 0. Values the
    space cannot express (a hidden shape not in HIDDEN_CHOICES, a rate out of range) are
    left out, and Optuna draws those."""
    hidden = next((k for k, v in HIDDEN_CHOICES.items() if v == tuple(tower.hidden)), None)
    params: dict[str, Any] = {
        "embedding_dim": tower.embedding_dim,
        "id_dim": tower.id_dim,
        "item_bias": tower.item_bias,
        "dropout": tower.dropout,
        "temperature": train.temperature,
        "lr": train.lr,
        "sparse_lr": train.sparse_lr,
        "batch_size": train.batch_size,
        "id_dropout": train.id_dropout,
        "patience": train.early_stopping_patience or _DEFAULT_PATIENCE,
        "uniform_negatives": train.uniform_negatives,
        # Off in the base recipe: the bottom of the range.
        "weight_decay": max(train.weight_decay, 1e-6),
        "id_l2": max(train.id_l2, 1e-6),
    }
    if hidden is not None:
        params["hidden"] = hidden
    # Keep only what the space can express (Optuna fails a trial whose enqueued value is
    # not one of its choices or is out of its range).
    return {k: v for k, v in params.items() if _expressible(k, v)}


def _expressible(name: str, value: Any) -> bool:
    choices = _CHOICES.get(name)
    if choices is not None:
        return value in choices
    lo, hi = _RANGES[name]
    return bool(lo <= value <= hi)


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
) -> Any:
    metric = cfg.evaluation.validation_metric
    users = cfg.evaluation.validation_users

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
            params = dict(trial.params)
            if trial.number == 0:  # what trial 0 trained: the base values, not their stand-ins
                params |= {
                    "weight_decay": train.weight_decay,
                    "id_l2": train.id_l2,
                    "patience": train.early_stopping_patience,
                }
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
                on_epoch=on_epoch,
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
                "train": cfg.train.model_copy(update={"early_stopping_patience": _DEFAULT_PATIENCE})
            }
        )
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    # A trial is pruned when, from its 5th epoch on, its validation curve is in the bottom
    # quarter of earlier trials at the same epoch (after 5 trials have finished). Not the
    # median rule: late epochs are reached only by the strong trials, and the median of
    # those pruned good trials at epoch 10-15 in a first search on ml-latest-small.
    pruner = optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=4)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    # Trial 0: the config's recipe. Trial 1 (sampled softmax): the same with the ablation
    # ladder's strongest sampled ingredients, item bias and 1,024 mixed negatives.
    base = _base_params(cfg.tower, cfg.train)
    study.enqueue_trial(base)
    if cfg.train.loss == "softmax":
        study.enqueue_trial(base | {"item_bias": True, "uniform_negatives": 1024})
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

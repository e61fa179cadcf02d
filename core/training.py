"""Training: fit the two-tower model on a snapshot's training split and stage its weights,
serving tables and training summary into a version folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel

from core.config import DataConfig, EvalConfig
from core.dataio import impression_examples, load_prepared
from core.distributed import DistributedJob, fit_distributed
from core.ladder import catalogue_skip
from core.progress import Progress, ProgressFactory, StepLogger
from core.recipes import CONFIGURED, SelectionConfig, candidates
from core.refs import SnapshotRef, StageRef
from core.versionio import copy_id_maps, write_serving_tables
from model.config import TowerConfig, TrainConfig
from model.pipeline import Prepared, fit, validator
from model.towers import TwoTower
from model.train import EpochStats, TrainResult
from storage import (
    Layout,
    ShardFolder,
    VersionFiles,
    VersionStore,
    save_model,
    snapshot_path,
    write_json,
)

__all__ = ["TrainSummary", "impression_examples", "train_version"]

log = logging.getLogger(__name__)


class TrainSummary(BaseModel):
    """What the run report shows about training."""

    device: str
    n_examples: int
    n_known_users: int
    n_known_items: int
    epoch_loss: list[float]
    epoch_seconds: list[float]
    examples_per_s: float
    epoch_validation: list[float | None] = []
    best_epoch: int | None = None
    stopped_early: bool = False
    # The recipe trained ('configured' unless selection chose another) and, when a choice
    # was made, every candidate's validation score.
    recipe: str = CONFIGURED
    recipe_validation: dict[str, float] = {}
    # Tower kind 'hybrid': the linear part's share of the blend chosen on validation and
    # the validation metric of every share tried (keys as text: JSON object keys).
    blend_share: float | None = None
    blend_validation: dict[str, float] = {}


def train_version(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig | None = None,
    *,
    selection: SelectionConfig | None = None,
    logger: StepLogger = log,
    progress: ProgressFactory = Progress,
) -> TrainSummary:
    """Train on the snapshot's training split; stage model.pt/json, the users and items
    tables, the ID maps and training.json into ``stage``'s folder.

    With ``train_cfg.early_stopping_patience`` the validation metric of ``eval_cfg`` is
    measured after every epoch and the best epoch's weights are kept. With ``selection``
    (candidate recipes, ``core.recipes``) every candidate is trained and the one whose
    final model scores best on validation is staged; ties go to the earlier candidate
    (the configured recipe first). ``logger`` gets one line per epoch; ``progress``
    reports epochs (fractional within an epoch).

    Raises ValueError when a choice is asked for and the split has no validation part.
    """
    eval_cfg = eval_cfg or EvalConfig()
    layout = Layout(Path(stage.root))
    folder = snapshot_path(layout, snapshot.snapshot_id)
    prep = load_prepared(folder, data_cfg)
    chosen = _choose(
        prep, folder, data_cfg, stage, tower_cfg, train_cfg, eval_cfg, selection, logger, progress
    )
    model, result = chosen.model, chosen.result
    staging = VersionStore(layout).staging_path(stage.version_id)
    save_model(staging, model.cpu().state_dict(), model.spec.model_dump(mode="json"))
    write_serving_tables(staging, prep.data, prep.vocab, model.history_len)
    copy_id_maps(folder, staging)
    seconds = [e.seconds for e in result.epochs]
    summary = TrainSummary(
        device=result.device,
        n_examples=chosen.n_examples,
        n_known_users=model.spec.n_users,
        n_known_items=model.spec.n_items,
        epoch_loss=[e.loss for e in result.epochs],
        epoch_seconds=seconds,
        examples_per_s=chosen.n_examples * len(seconds) / max(sum(seconds), 1e-9),
        epoch_validation=[e.val_metric for e in result.epochs],
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
        recipe=chosen.name,
        recipe_validation=chosen.scores,
        blend_share=result.blend_share,
        blend_validation={f"{share:g}": v for share, v in result.blend.items()},
    )
    # Kept with the version: the report's loss curve (`towerflow report`) reads it.
    write_json(staging / VersionFiles.TRAINING, summary.model_dump(mode="json"))
    return summary


@dataclass
class _Fitted:
    """A trained candidate: its name, model, training history and example count, and
    (after a choice) every candidate's validation score."""

    name: str
    model: TwoTower
    result: TrainResult
    n_examples: int
    scores: dict[str, float] = field(default_factory=dict)


def _choose(
    prep: Prepared,
    folder: Path,
    data_cfg: DataConfig,
    stage: StageRef,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    selection: SelectionConfig | None,
    logger: StepLogger,
    progress: ProgressFactory,
) -> _Fitted:
    """Fit the configured recipe, or every candidate of ``selection`` and keep the one
    with the best validation score (one model in memory besides the one training)."""
    if selection is None or not selection.enabled:
        return _fit_one(
            prep,
            folder,
            data_cfg,
            stage,
            CONFIGURED,
            tower_cfg,
            train_cfg,
            eval_cfg,
            logger,
            progress,
        )
    metric = eval_cfg.validation_metric
    validate = validator(prep, metric, eval_cfg.validation_users, train_cfg.seed)
    if validate is None:
        raise ValueError(
            f"selection chooses the recipe on validation, and protocol {prep.split.protocol!r} "
            "left no validation interactions"
        )
    best: _Fitted | None = None
    scores: dict[str, float] = {}
    for name, tower, train in candidates(selection, tower_cfg, train_cfg, prep.split.protocol):
        reason = catalogue_skip(tower, train, prep.vocab.n_items)
        if reason is not None:
            logger.info("recipe %r skipped: %s", name, reason)
            continue
        fitted = _fit_one(
            prep, folder, data_cfg, stage, name, tower, train, eval_cfg, logger, progress
        )
        scores[name] = validate(fitted.model)
        logger.info("recipe %r: validation %s %.4f", name, metric, scores[name])
        if best is None or scores[name] > scores[best.name]:
            best = fitted  # strictly better: ties keep the earlier, simpler recipe
    if best is None:  # every candidate was over its catalogue limit
        raise ValueError(
            f"no candidate recipe can train on {prep.vocab.n_items:,} items: each one is a "
            "full softmax or a linear fit over its catalogue limit"
        )
    logger.info("recipe chosen on validation %s: %r (%.4f)", metric, best.name, scores[best.name])
    best.scores = scores
    return best


def _fit_one(
    prep: Prepared,
    folder: Path,
    data_cfg: DataConfig,
    stage: StageRef,
    name: str,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    logger: StepLogger,
    progress: ProgressFactory,
) -> _Fitted:
    """Train one recipe on the training split, with a progress bar and a line per epoch."""
    label = "" if name == CONFIGURED else f" (recipe {name})"
    bar = progress(
        "train-progress",
        f"Training version {stage.version_id}{label}: {train_cfg.epochs} epoch(s) (early "
        "stopping may end it sooner)",
        train_cfg.epochs,
        "epochs",
    )

    def step(epoch: int, done: int, per_epoch: int) -> None:
        bar.update(epoch - 1 + done / max(per_epoch, 1))

    def report(stats: EpochStats) -> None:
        logger.info(
            "epoch %d/%d: loss %.4f, %.1f s, %.0f examples/s%s",
            stats.epoch,
            train_cfg.epochs,
            stats.loss,
            stats.seconds,
            stats.examples_per_s,
            "" if stats.val_metric is None else f", validation {stats.val_metric:.4f}",
        )

    pointwise = None
    if train_cfg.loss == "bce":
        if tower_cfg.history_len > 0:
            raise ValueError("the history feature is trained with loss 'softmax' only")
        pointwise = impression_examples(folder, prep)
        n_examples = len(pointwise[0])
        logger.info("training on %d impressions (loss bce)%s", n_examples, label)
    else:
        n_examples = int(prep.split.train.sum())
        logger.info(
            "training on %d interactions (%d known users, %d known items, history %d)%s",
            n_examples,
            prep.vocab.n_users,
            prep.vocab.n_items,
            tower_cfg.history_len,
            label,
        )
    if train_cfg.world_size > 1:
        job = DistributedJob(
            snapshot=folder,
            # Under the version's shard folder: removed after the fit, and with the
            # version's other parts if the run dies first (storage.shards).
            scratch=ShardFolder(Layout(Path(stage.root)), stage.version_id, "train").path,
            data_cfg=data_cfg,
            tower_cfg=tower_cfg,
            train_cfg=train_cfg,
            validate_metric=eval_cfg.validation_metric,
            validate_users=eval_cfg.validation_users,
            threads=max(1, torch.get_num_threads() // train_cfg.world_size),
        )
        model, result = fit_distributed(job, on_epoch=report, on_step=step)
    else:
        model, result = fit(
            prep,
            tower_cfg,
            train_cfg,
            validate_metric=eval_cfg.validation_metric,
            validate_users=eval_cfg.validation_users,
            on_epoch=report,
            pointwise=pointwise,
            on_step=step,
        )
    bar.update(train_cfg.epochs, force=True)  # early stopping ends before the last epoch
    return _Fitted(name, model, result, n_examples)

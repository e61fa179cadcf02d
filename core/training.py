"""Training: fit the two-tower model on a snapshot's training split and stage its weights,
serving tables and training summary into a version folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from core.config import DataConfig, EvalConfig
from core.dataio import load_impressions, load_prepared
from core.progress import Progress, ProgressFactory, StepLogger
from core.refs import SnapshotRef, StageRef
from core.versionio import copy_id_maps, write_serving_tables
from model.config import TowerConfig, TrainConfig
from model.pipeline import Prepared, fit
from model.train import EpochStats
from storage import Layout, VersionFiles, VersionStore, save_model, snapshot_path, write_json

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


def impression_examples(folder: Path, prep: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impressions inside the training window whose user and item the vocabulary knows
    (the pointwise mode needs a global time cut: the temporal protocol)."""
    if prep.split.t_val is None:
        raise ValueError(
            f"loss 'bce' trains on impressions before the validation cut, which only the "
            f"'temporal' protocol has (got {prep.split.protocol!r})"
        )
    data, vocab = prep.data, prep.vocab
    imp = load_impressions(folder)
    ts = imp.column("timestamp").to_numpy()
    u_pos = data.user_positions(imp.column("user_id").to_numpy())
    i_pos = data.item_positions(imp.column("item_id").to_numpy())
    # Position -1 (not in the tables) indexes the last row; the mask below drops those.
    u, i = vocab.user_id_row[u_pos], vocab.item_id_row[i_pos]
    keep = (ts < prep.split.t_val) & (u_pos >= 0) & (i_pos >= 0) & (u > 0) & (i > 0)
    labels = imp.column("label").to_numpy()[keep].astype(np.float32)
    return u[keep], i[keep], labels


def train_version(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig | None = None,
    *,
    logger: StepLogger = log,
    progress: ProgressFactory = Progress,
) -> TrainSummary:
    """Train on the snapshot's training split; stage model.pt/json, the users and items
    tables, the ID maps and training.json into ``stage``'s folder.

    With ``train_cfg.early_stopping_patience`` the validation metric of ``eval_cfg`` is
    measured after every epoch and the best epoch's weights are kept. ``logger`` gets one
    line per epoch; ``progress`` reports epochs (fractional within an epoch).
    """
    eval_cfg = eval_cfg or EvalConfig()
    layout = Layout(Path(stage.root))
    folder = snapshot_path(layout, snapshot.snapshot_id)
    prep = load_prepared(folder, data_cfg)
    bar = progress(
        "train-progress",
        f"Training version {stage.version_id}: {train_cfg.epochs} epoch(s) (early stopping "
        "may end it sooner)",
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
        logger.info("training on %d impressions (loss bce)", n_examples)
    else:
        n_examples = int(prep.split.train.sum())
        logger.info(
            "training on %d interactions (%d known users, %d known items, history %d)",
            n_examples,
            prep.vocab.n_users,
            prep.vocab.n_items,
            tower_cfg.history_len,
        )
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
    staging = VersionStore(layout).staging_path(stage.version_id)
    save_model(staging, model.cpu().state_dict(), model.spec.model_dump(mode="json"))
    write_serving_tables(staging, prep.data, prep.vocab, model.history_len)
    copy_id_maps(folder, staging)
    seconds = [e.seconds for e in result.epochs]
    summary = TrainSummary(
        device=result.device,
        n_examples=n_examples,
        n_known_users=model.spec.n_users,
        n_known_items=model.spec.n_items,
        epoch_loss=[e.loss for e in result.epochs],
        epoch_seconds=seconds,
        examples_per_s=n_examples * len(seconds) / max(sum(seconds), 1e-9),
        epoch_validation=[e.val_metric for e in result.epochs],
        best_epoch=result.best_epoch,
        stopped_early=result.stopped_early,
    )
    # Kept with the version: the report's loss curve (`towerflow report`) reads it.
    write_json(staging / VersionFiles.TRAINING, summary.model_dump(mode="json"))
    return summary

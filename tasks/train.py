"""Training step: fit the two-tower model on the training split and stage its weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from pydantic import BaseModel

from model.config import TowerConfig, TrainConfig
from model.dataset import Dataset, Split, Vocabulary, temporal_split
from model.train import EpochStats, init_model, train
from storage import Layout, VersionStore, save_model, snapshot_path
from tasks.config import DataConfig
from tasks.dataio import load_dataset, load_impressions, write_serving_tables
from tasks.refs import SnapshotRef, StageRef
from tasks.runtime import apply_threads

__all__ = ["TrainSummary", "train_model"]


class TrainSummary(BaseModel):
    """What the run report shows about training."""

    device: str
    n_examples: int
    n_known_users: int
    n_known_items: int
    epoch_loss: list[float]
    epoch_seconds: list[float]
    examples_per_s: float


def _bce_examples(
    folder: Path, data: Dataset, split: Split, vocab: Vocabulary
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impressions inside the training window whose user and item the vocabulary knows."""
    imp = load_impressions(folder)
    ts = imp.column("timestamp").to_numpy()
    u_pos = data.user_positions(imp.column("user_id").to_numpy())
    i_pos = data.item_positions(imp.column("item_id").to_numpy())
    # Position -1 (not in the tables) indexes the last row; the mask below drops those.
    u, i = vocab.user_id_row[u_pos], vocab.item_id_row[i_pos]
    keep = (ts < split.t_val) & (u_pos >= 0) & (i_pos >= 0) & (u > 0) & (i > 0)
    labels = imp.column("label").to_numpy()[keep].astype(np.float32)
    return u[keep], i[keep], labels


@task(name="train-model")
def train_model(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    threads: int | None = None,
) -> TrainSummary:
    """Train on the snapshot's training split; stage model.pt/json, users and items tables."""
    logger = get_run_logger()
    apply_threads(threads)
    layout = Layout(Path(stage.root))
    folder = snapshot_path(layout, snapshot.snapshot_id)
    data = load_dataset(folder)
    split = temporal_split(data.inter_ts, data_cfg.val_frac, data_cfg.test_frac)
    vocab = Vocabulary.from_training(data, split.train)
    tables = vocab.feature_tables(data)
    spec = vocab.tower_spec(data, tower_cfg)
    model = init_model(spec, train_cfg.seed)
    model.fit_feature_scaling(tables.user_profile[1:], tables.item_content[1:])

    labels = None
    if train_cfg.loss == "bce":
        users, items, labels = _bce_examples(folder, data, split, vocab)
    else:
        users = vocab.user_id_row[data.inter_user[split.train]]
        items = vocab.item_id_row[data.inter_item[split.train]]
    logger.info(
        "training on %d examples (%d known users, %d known items, loss %s)",
        len(users),
        spec.n_users,
        spec.n_items,
        train_cfg.loss,
    )

    def report(stats: EpochStats) -> None:
        logger.info(
            "epoch %d/%d: loss %.4f, %.1f s, %.0f examples/s",
            stats.epoch,
            train_cfg.epochs,
            stats.loss,
            stats.seconds,
            stats.examples_per_s,
        )

    result = train(model, tables, users, items, train_cfg, labels=labels, on_epoch=report)
    staging = VersionStore(layout).staging_path(stage.version_id)
    save_model(staging, model.cpu().state_dict(), spec.model_dump(mode="json"))
    write_serving_tables(staging, data, vocab)
    seconds = [e.seconds for e in result.epochs]
    return TrainSummary(
        device=result.device,
        n_examples=len(users),
        n_known_users=spec.n_users,
        n_known_items=spec.n_items,
        epoch_loss=[e.loss for e in result.epochs],
        epoch_seconds=seconds,
        examples_per_s=len(users) * len(seconds) / max(sum(seconds), 1e-9),
    )

"""Training step: fit the two-tower model on the training split and stage its weights."""

from __future__ import annotations

from prefect import get_run_logger, task

from core.config import DataConfig, EvalConfig, SelectionConfig, TowerConfig, TrainConfig
from core.refs import SnapshotRef, StageRef
from core.resume import train_step
from core.threads import apply_threads
from core.training import TrainSummary
from tasks.progress import StepProgress

__all__ = ["train_model"]


@task(name="train-model")
def train_model(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    threads: int | None = None,
    eval_cfg: EvalConfig | None = None,
    resume: bool = False,
    selection: SelectionConfig | None = None,
) -> TrainSummary:
    """``core.resume.train_step`` (train, or reuse a failed run's model for the same
    inputs; with ``selection``, every candidate recipe and keep the best on validation)
    with a progress artifact and the run logger."""
    apply_threads(threads)
    return train_step(
        snapshot,
        stage,
        data_cfg,
        tower_cfg,
        train_cfg,
        eval_cfg,
        selection=selection,
        resume=resume,
        logger=get_run_logger(),
        progress=StepProgress,
    )

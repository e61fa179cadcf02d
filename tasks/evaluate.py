"""Evaluation step and quality gate: full-ranking metrics of the staged model next to the
popularity baseline and (on synthetic data) the oracle that knows the true scores."""

from __future__ import annotations

from prefect import get_run_logger, task

from core.config import DataConfig, EvalConfig
from core.evaluation import EvalReport, enforce_gate
from core.refs import SnapshotRef, StageRef
from core.resume import evaluate_step
from core.threads import apply_threads

__all__ = ["evaluate_model", "quality_gate"]


@task(name="evaluate")
def evaluate_model(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    threads: int | None = None,
    resume: bool = False,
) -> EvalReport:
    """``core.resume.evaluate_step``: rank every item for the test users (or reuse a failed
    run's result for the same inputs); stage metrics.json with the model, popularity,
    classical baseline and oracle figures."""
    apply_threads(threads)
    return evaluate_step(snapshot, stage, data_cfg, cfg, resume=resume, logger=get_run_logger())


@task(name="quality-gate")
def quality_gate(report: EvalReport, stage: StageRef) -> None:
    """Fail the run (and drop the staged version) unless the model beat the baseline."""
    enforce_gate(report, stage, logger=get_run_logger())

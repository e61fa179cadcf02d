"""Embedding step: every catalogue item through the staged item tower."""

from __future__ import annotations

from prefect import get_run_logger, task

from core.refs import StageRef
from core.resume import embed_step
from core.threads import apply_threads
from tasks.progress import StepProgress
from tasks.retry import IO_RETRY

__all__ = ["embed_catalogue"]


@task(name="embed-items", **IO_RETRY)
def embed_catalogue(
    stage: StageRef, threads: int | None = None, resume: bool = False, batch_size: int = 8192
) -> int:
    """``core.resume.embed_step`` (embed every item, or reuse a failed run's vectors for
    the same staged model) with a progress artifact; returns the count."""
    apply_threads(threads)
    return embed_step(
        stage, batch_size, resume=resume, logger=get_run_logger(), progress=StepProgress
    )

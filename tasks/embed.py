"""Embedding step: every catalogue item through the staged item tower."""

from __future__ import annotations

from prefect import get_run_logger, task

from core.embedding import embed_version_items
from core.refs import StageRef
from core.threads import apply_threads
from tasks.progress import StepProgress
from tasks.retry import IO_RETRY

__all__ = ["embed_catalogue"]


@task(name="embed-items", **IO_RETRY)
def embed_catalogue(stage: StageRef, threads: int | None = None, batch_size: int = 8192) -> int:
    """``core.embedding.embed_version_items`` with a progress artifact; returns the count."""
    apply_threads(threads)
    return embed_version_items(stage, batch_size, logger=get_run_logger(), progress=StepProgress)

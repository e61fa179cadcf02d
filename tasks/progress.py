"""Progress inside a Prefect task: the core's progress log records plus a progress
artifact on the run page (updated in place)."""

from __future__ import annotations

from typing import cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext

from core.progress import Progress

__all__ = ["StepProgress"]


class StepProgress(Progress):
    """``core.progress.Progress`` that also keeps artifact ``key`` at 0..100 %.

    Outside a Prefect run (a task's ``.fn`` in a unit test) only the log records are
    emitted: the artifact API needs a run to attach to.
    """

    def __init__(
        self, key: str, description: str, total: float, unit: str, min_interval_s: float = 0.5
    ) -> None:
        self._artifact: UUID | None = None
        if TaskRunContext.get() is not None:
            # Sync inside a task run; the union return type covers async callers.
            self._artifact = cast(
                UUID, create_progress_artifact(progress=0.0, key=key, description=description)
            )
        super().__init__(key, description, total, unit, min_interval_s)

    def publish(self, fraction: float) -> None:
        if self._artifact is not None:
            update_progress_artifact(self._artifact, progress=100.0 * fraction)

"""Progress of long steps, for the two people watching: a Prefect progress artifact (the
run page in the UI, updated in place) and a log record the CLI turns into a progress bar.

The log record carries ``record.towerflow_progress = ProgressEvent(...)``; any process that
runs a flow in-process (``towerflow run``) can render it (see ``cli.progress``).
Updates are throttled, so a step may call ``update`` as often as it likes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext

__all__ = ["PROGRESS_ATTR", "ProgressEvent", "StepProgress"]

log = logging.getLogger("cli.progress")

PROGRESS_ATTR = "towerflow_progress"


@dataclass(frozen=True)
class ProgressEvent:
    """One progress update: ``done`` of ``total`` units of ``step`` (e.g. steps, items)."""

    step: str
    done: float
    total: float
    unit: str

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total > 0 else 1.0


class StepProgress:
    """Progress of one step: artifact ``key`` (0..100 %) and throttled log records.

    Outside a Prefect run (a task's ``.fn`` in a unit test) only the log records are
    emitted: the artifact API needs a run to attach to.
    """

    def __init__(
        self, key: str, description: str, total: float, unit: str, min_interval_s: float = 0.5
    ) -> None:
        self.key, self.total, self.unit = key, float(total), unit
        self._min_interval_s = min_interval_s
        self._last = -float("inf")
        self._artifact: UUID | None = None
        if TaskRunContext.get() is not None:
            # Sync inside a task run; the union return type covers async callers.
            self._artifact = cast(
                UUID, create_progress_artifact(progress=0.0, key=key, description=description)
            )
        self._emit(0.0)
        self._last = time.monotonic()

    def update(self, done: float, *, force: bool = False) -> None:
        """Report ``done`` units; rate-limited unless ``force`` or the step is complete."""
        now = time.monotonic()
        if not force and done < self.total and now - self._last < self._min_interval_s:
            return
        self._last = now
        if self._artifact is not None:
            fraction = ProgressEvent(self.key, done, self.total, self.unit).fraction
            update_progress_artifact(self._artifact, progress=100.0 * fraction)
        self._emit(done)

    def _emit(self, done: float) -> None:
        event = ProgressEvent(self.key, done, self.total, self.unit)
        log.debug(
            "%s: %.0f%% (%s of %s %s)",
            self.key,
            100 * event.fraction,
            _num(done),
            _num(self.total),
            self.unit,
            extra={PROGRESS_ATTR: event},
        )


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"

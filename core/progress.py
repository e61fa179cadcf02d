"""Progress of long steps as throttled log records that any front end can render.

Each record carries ``record.towerflow_progress = ProgressEvent(...)`` on the logger
``PROGRESS_LOGGER``: the CLI turns them into progress bars, and a Prefect task adds its
progress artifact on top (``tasks.progress``). A step may call ``update`` as often as it
likes; records are rate-limited.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

__all__ = [
    "PROGRESS_ATTR",
    "PROGRESS_LOGGER",
    "Progress",
    "ProgressEvent",
    "ProgressFactory",
    "StepLogger",
]

PROGRESS_LOGGER: Final = "towerflow.progress"
PROGRESS_ATTR: Final = "towerflow_progress"

log = logging.getLogger(PROGRESS_LOGGER)


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


class Progress:
    """Progress of one step, keyed ``key`` (e.g. ``train-progress``): throttled DEBUG log
    records. Subclasses publish the fraction elsewhere by overriding ``publish``."""

    def __init__(
        self, key: str, description: str, total: float, unit: str, min_interval_s: float = 0.5
    ) -> None:
        self.key, self.description, self.total, self.unit = key, description, float(total), unit
        self._min_interval_s = min_interval_s
        self._emit(0.0)
        self._last = time.monotonic()

    def update(self, done: float, *, force: bool = False) -> None:
        """Report ``done`` units; rate-limited unless ``force`` or the step is complete."""
        now = time.monotonic()
        if not force and done < self.total and now - self._last < self._min_interval_s:
            return
        self._last = now
        self.publish(ProgressEvent(self.key, done, self.total, self.unit).fraction)
        self._emit(done)

    def publish(self, fraction: float) -> None:
        """Hook for subclasses: show ``fraction`` (0..1) somewhere else; no-op here."""

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


# Where a step writes its log lines: a module logger, or a Prefect run logger (an adapter).
StepLogger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]

# What a step calls to start reporting: (key, description, total, unit) -> Progress.
ProgressFactory: TypeAlias = Callable[[str, str, float, str], Progress]


def _num(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.2f}"

"""Progress bars for long CLI steps: turns the progress records of ``core.progress`` (one
logger, ``towerflow.progress``) into rich progress bars on stderr while a flow runs
in-process. On a non-terminal stderr rich prints no live bars, so logs and CI stay clean."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from core.progress import PROGRESS_ATTR, PROGRESS_LOGGER, ProgressEvent

__all__ = ["ProgressBarHandler", "progress_bars"]


class ProgressBarHandler(logging.Handler):
    """One bar per progress key (e.g. ``train-progress``), created on its first record."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(level=logging.DEBUG)
        self.progress = progress
        self.bars: dict[str, TaskID] = {}

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, PROGRESS_ATTR, None)
        if not isinstance(event, ProgressEvent):
            return
        bar = self.bars.get(event.step)
        if bar is None:
            label = f"{event.step.removesuffix('-progress')} ({event.unit})"
            bar = self.progress.add_task(label, total=event.total)
            self.bars[event.step] = bar
        self.progress.update(bar, completed=event.done, total=event.total)


@contextmanager
def progress_bars(enabled: bool = True) -> Iterator[Progress | None]:
    """Show progress bars for the ``with`` block (nothing when not ``enabled``)."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    logger = logging.getLogger(PROGRESS_LOGGER)
    handler = ProgressBarHandler(progress)
    saved = (logger.level, logger.propagate)
    # The records are DEBUG so that ordinary logging never shows them twice.
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(handler)
    try:
        with progress:
            yield progress
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

"""The terminal's view of a flow the CLI runs in-process: when a step fails, Prefect logs
the task's failure with its traceback, then the flow's, to the console; the command then
reports the failure once itself (``cli.errors``). While ``quiet_run_failures`` is active
those failure records stay off the console handlers; Prefect's API handler still sends
them to the run's logs (the UI shows them), and ``--debug`` keeps them on the console.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

__all__ = ["RunFailureFilter", "quiet_run_failures"]

_RUN_LOGGERS: Final = ("prefect.flow_runs", "prefect.task_runs")
_FAILED_STATES: Final = ("Finished in state Failed", "Finished in state Crashed")


class RunFailureFilter(logging.Filter):
    """Drops the flow and task run loggers' errors (failures with tracebacks, crashes) and
    their "Finished in state Failed(...)" lines; passes everything else (progress, retries,
    our own steps' messages)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_RUN_LOGGERS):
            return True
        if record.levelno >= logging.ERROR:
            return False
        return not record.getMessage().startswith(_FAILED_STATES)


def _console_handlers() -> list[logging.Handler]:
    """The handlers that write to the terminal: the root's and ``prefect``'s, except
    Prefect's API log handler."""
    from prefect.logging.handlers import APILogHandler

    handlers = [*logging.getLogger().handlers, *logging.getLogger("prefect").handlers]
    return [h for h in handlers if not isinstance(h, APILogHandler)]


@contextmanager
def quiet_run_failures(enabled: bool = True) -> Iterator[None]:
    """Keep flow and task run failures off the console for the ``with`` block (nothing
    changes when not ``enabled``)."""
    if not enabled:
        yield
        return
    quiet = RunFailureFilter()
    handlers = _console_handlers()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)

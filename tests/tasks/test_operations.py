"""Operations without Prefect: which failures retry, progress records and bars, and the
lock that keeps two nightly runs on one store apart."""

from __future__ import annotations

import errno
import logging
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from cli.progress import ProgressBarHandler
from core.lifecycle import OverlappingRunError, exclusive_nightly
from core.progress import PROGRESS_ATTR, PROGRESS_LOGGER, ProgressEvent
from storage import Layout, file_lock
from tasks.progress import StepProgress
from tasks.retry import IO_RETRY, is_transient


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OSError(5, "Input/output error"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (TimeoutError("lock still held"), True),
        (ConnectionResetError(), True),
        (FileNotFoundError("snapshot.json"), False),
        (PermissionError("read-only"), False),
        (OSError(errno.ENOSPC, "No space left on device"), False),
        (OSError(errno.EROFS, "Read-only file system"), False),
        (FileExistsError("version exists"), False),
        (ValueError("bad row 3"), False),
        (KeyError("item_id"), False),
        (RuntimeError("logic"), False),
        (None, False),
    ],
)
def test_only_transient_failures_retry(error: BaseException | None, transient: bool) -> None:
    assert is_transient(error) is transient


def test_io_retry_backs_off_exponentially() -> None:
    delays = IO_RETRY["retry_delay_seconds"](IO_RETRY["retries"])
    assert IO_RETRY["retries"] == 3 and delays == [1, 2, 4]


def test_step_progress_outside_a_run_logs_throttled_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=PROGRESS_LOGGER)
    progress = StepProgress("train-progress", "t", total=4, unit="epochs", min_interval_s=60)
    for done in (0.5, 1.0, 1.5):  # inside the interval: dropped
        progress.update(done)
    progress.update(2.0, force=True)
    progress.update(4.0)  # completion always reports
    events = [getattr(r, PROGRESS_ATTR) for r in caplog.records]
    assert [e.done for e in events] == [0.0, 2.0, 4.0]
    assert events[-1] == ProgressEvent("train-progress", 4.0, 4.0, "epochs")
    assert events[-1].fraction == 1.0 and ProgressEvent("x", 1, 0, "u").fraction == 1.0


def test_progress_bar_handler_makes_one_bar_per_step() -> None:
    progress = Progress(console=Console(file=open("/dev/null", "w")))  # noqa: SIM115
    handler = ProgressBarHandler(progress)
    for step, done, total in (("train-progress", 1, 4), ("embed-progress", 10, 600),
                              ("train-progress", 3, 4)):  # fmt: skip
        record = logging.LogRecord(PROGRESS_LOGGER, logging.DEBUG, "", 0, "", (), None)
        setattr(record, PROGRESS_ATTR, ProgressEvent(step, done, total, "u"))
        handler.emit(record)
    handler.emit(logging.LogRecord("x", logging.INFO, "", 0, "plain", (), None))  # ignored
    bars = {t.description: (t.completed, t.total) for t in progress.tasks}
    assert bars == {"train (u)": (3, 4), "embed (u)": (10, 600)}
    progress.console.file.close()


def test_second_nightly_on_a_store_fails_naming_the_first(tmp_path: Path) -> None:
    with (
        exclusive_nightly(str(tmp_path), "flow run first-run"),
        pytest.raises(OverlappingRunError, match="first-run") as caught,
        exclusive_nightly(str(tmp_path), "flow run second-run"),
    ):
        pytest.fail("the second run must not start")
    assert "this run did nothing" in str(caught.value)
    # Released: the next run goes ahead, and the lock file names nobody.
    with exclusive_nightly(str(tmp_path), "flow run third-run"):
        assert "third-run" in Layout(tmp_path).nightly_lock.read_text()
    assert Layout(tmp_path).nightly_lock.read_text() == ""


def test_a_timeout_inside_the_run_is_not_mistaken_for_an_overlap(tmp_path: Path) -> None:
    lock = tmp_path / "publish.lock"
    with (
        pytest.raises(TimeoutError, match=r"publish\.lock"),
        exclusive_nightly(str(tmp_path), "flow run r"),
        file_lock(lock, timeout_s=0),
        file_lock(lock, timeout_s=0),
    ):
        pass

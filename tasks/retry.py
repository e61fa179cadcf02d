"""Retry policy of the tasks that touch disk or the Prefect API: a few attempts with
exponential backoff and jitter, for transient failures only.

Bad input, missing files and logic errors fail the same way every time, so they fail at
once; a flaky disk, a locked SQLite database or a dropped API connection may not.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Any, Final

from prefect.tasks import exponential_backoff

__all__ = ["IO_RETRY", "is_transient"]

_PERMANENT: Final = (
    ValueError,
    TypeError,
    KeyError,
    LookupError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)

# OSErrors that seconds of backoff do not cure: a full disk or quota, a read-only mount.
_PERMANENT_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def is_transient(exc: BaseException | None) -> bool:
    """True for errors a retry may cure: OS / SQLite operational errors, timeouts and
    connection errors that are not one of the permanent kinds."""
    if exc is None or isinstance(exc, _PERMANENT):
        return False
    if isinstance(exc, OSError) and exc.errno in _PERMANENT_ERRNOS:
        return False
    return isinstance(exc, OSError | sqlite3.OperationalError | TimeoutError | ConnectionError)


def _retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    # The engine builds the Failed state with the raised exception as its data.
    data = getattr(state, "data", None)
    return is_transient(data) if isinstance(data, BaseException) else False


# `@task(**IO_RETRY)`: 3 retries after ~1, 2 and 4 s (+-50% jitter so that runs which failed
# together do not retry together).
IO_RETRY: Final[dict[str, Any]] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=1),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_condition,
}

"""Who owns a staging folder, so that the next run can tell a dead writer's leftovers from
a live writer's work without waiting hours.

Next to each staging folder `<name>/` the creator writes `<name>.owner` *before* making
the folder: the host, the pid and that process's start time (so a recycled pid is not
mistaken for the owner). A folder is dead when its owner ran on this host and that
process no longer exists. A folder whose owner is on another host, or that has no
marker (written by older code), is left to the age-based collection.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from storage.artifacts import write_json

__all__ = [
    "OWNER_SUFFIX",
    "Owner",
    "owner_path",
    "read_owner",
    "read_owner_file",
    "this_process",
    "write_owner",
]

log = logging.getLogger(__name__)

OWNER_SUFFIX: Final = ".owner"


@dataclass(frozen=True)
class Owner:
    """The process that created a staging folder."""

    host: str
    pid: int
    start_ticks: int | None  # /proc/<pid>/stat field 22 (clock ticks since boot); None: unknown
    kind: str  # "nightly", "items", "snapshot", ... (for the operator; not used for liveness)

    def is_dead(self) -> bool:
        """True only when certain: same host, and no process with this pid and start time."""
        if self.host != socket.gethostname():
            return False
        started = _start_ticks(self.pid)
        if started is None:
            return not _pid_exists(self.pid)
        # The pid is in use: by the owner, unless that process started at another time.
        return self.start_ticks is not None and started != self.start_ticks


def owner_path(folder: Path) -> Path:
    """The marker of staging folder `folder` (a sibling file)."""
    return folder.with_name(folder.name + OWNER_SUFFIX)


def this_process(kind: str) -> Owner:
    """The calling process as an owner."""
    pid = os.getpid()
    return Owner(socket.gethostname(), pid, _start_ticks(pid), kind)


def write_owner(folder: Path, kind: str) -> None:
    """Record the calling process as the owner of `folder` (call before creating it)."""
    write_json(owner_path(folder), asdict(this_process(kind)))


def read_owner(folder: Path) -> Owner | None:
    """The owner recorded for `folder`; None when there is no readable marker."""
    return read_owner_file(owner_path(folder))


def read_owner_file(path: Path) -> Owner | None:
    """The owner recorded in marker file `path`, or in the temporary file of a marker
    whose write was cut short (complete once its bytes were written); None when there is
    no readable record."""
    try:
        data = json.loads(path.read_text())
        return Owner(
            host=str(data["host"]),
            pid=int(data["pid"]),
            start_ticks=None if data.get("start_ticks") is None else int(data["start_ticks"]),
            kind=str(data.get("kind", "")),
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        if not isinstance(e, FileNotFoundError):
            log.warning("unreadable owner marker %s: %s", path, e)
        return None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _start_ticks(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux); None where /proc lacks it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 overall
    except (IndexError, ValueError):
        return None

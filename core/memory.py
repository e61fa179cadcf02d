"""How much memory a step takes: the process's resident set sampled while it runs.

The kernel's own high-water mark (``VmHWM``, ``ru_maxrss``) covers the whole process
life, so it cannot tell one step from the one before; resetting it (``clear_refs``) would
also reset what ``wait4`` reports to a parent that measures the run. A sampling thread
reads ``/proc/self/statm`` instead: the peak it sees is the step's, within one interval.
"""

from __future__ import annotations

import os
import threading
from types import TracebackType
from typing import Self

__all__ = ["RssSampler", "rss_mib"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mib() -> float | None:
    """This process's resident set now, in MiB; None where ``/proc`` is not available."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """``with RssSampler() as s: ...``: ``s.peak_mib`` is the largest resident set seen
    from entry to exit (sampled every ``interval`` s, and at both ends), None without
    ``/proc``; ``s.start_mib`` the resident set at entry."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.start_mib: float | None = None
        self.peak_mib: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def _sample(self) -> None:
        now = rss_mib()
        if now is not None and (self.peak_mib is None or now > self.peak_mib):
            self.peak_mib = now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> Self:
        self.start_mib = rss_mib()
        self._sample()
        if self.start_mib is not None:
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()

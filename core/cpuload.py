"""What the CPUs this process may run on are doing: how much of them is idle and how much
other processes use, from ``/proc/stat`` and the process's own CPU time (Linux).

The thread governor (``model.threadgov``) reads it to tell a co-tenant from noise at
once: an extra OpenMP thread only pays where a core is idle, and spinning threads next to
another busy process cost 5-30x (docs/performance.md, "Shared CPUs"), so the governor
neither probes a larger count while the cores are busy nor waits for a slow window to
notice another process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CpuLoad", "LoadSample"]


@dataclass(frozen=True)
class LoadSample:
    """Averages over the span since the previous sample, in CPUs (1.0 = one whole CPU)."""

    idle: float  # idle capacity of the process's CPUs
    others: float  # what every other process used of them


def _affinity() -> set[int]:
    """The CPUs this process may run on (empty where the OS cannot say: not Linux)."""
    get = getattr(os, "sched_getaffinity", None)
    return set(get(0)) if get is not None else set()


def _process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class CpuLoad:
    """Samples ``/proc/stat``'s lines of ``cpus`` (default: the affinity mask).

    ``sample()`` returns the load since the previous call, or None on the first call, when
    the file cannot be read (not Linux, a sandbox) or when too little time passed for the
    kernel's tick counters (10 ms) to say anything.
    """

    cpus: Collection[int] = field(default_factory=_affinity)
    stat: Path = Path("/proc/stat")
    clock: Callable[[], float] = time.monotonic
    own_cpu_s: Callable[[], float] = _process_cpu_s
    min_span_s: float = 0.05
    _hz: float = field(init=False, default=float(os.sysconf("SC_CLK_TCK")))
    _last: tuple[float, float, float, float] | None = field(init=False, default=None)

    def _ticks(self) -> tuple[float, float] | None:
        """(idle, busy) ticks summed over ``cpus``."""
        try:
            text = self.stat.read_text()
        except OSError:
            return None
        idle = busy = 0.0
        for line in text.splitlines():
            name, _, rest = line.partition(" ")
            if (
                not (name.startswith("cpu") and name[3:].isdigit())
                or int(name[3:]) not in self.cpus
            ):
                continue
            # user nice system idle iowait irq softirq steal (guest time is inside user).
            v = [float(x) for x in rest.split()[:8]]
            idle += v[3] + v[4]
            busy += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
        return idle, busy

    def sample(self) -> LoadSample | None:
        ticks = self._ticks()
        if ticks is None:
            return None
        now, own = self.clock(), self.own_cpu_s()
        last, self._last = self._last, (now, ticks[0], ticks[1], own)
        if last is None:
            return None
        span = now - last[0]
        if span < self.min_span_s:
            self._last = last  # keep measuring from the older sample
            return None
        idle = (ticks[0] - last[1]) / self._hz / span
        busy = (ticks[1] - last[2]) / self._hz / span
        ours = (own - last[3]) / span
        return LoadSample(idle=max(idle, 0.0), others=max(busy - ours, 0.0))

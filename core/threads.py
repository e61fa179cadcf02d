"""Thread settings applied at the start of every compute-heavy run.

torch and Faiss each load their own OpenMP runtime, so both are set explicitly; otherwise
each may start one thread per core on top of the other and oversubscribe the machine.
The default count is the CPUs the process may really use (``core.cpus.cpu_budget``), and
it adapts to the load: ``model.threadgov`` lowers it while another process shares the
cores (spinning OpenMP threads collapse throughput there) and raises it back when they
are quiet. An explicit count (config, option, ``$TOWERFLOW_THREADS``) is kept as given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from core.cpuload import CpuLoad
from core.cpus import CpuBudget, adaptive_enabled, thread_budget
from model.index import configure_threads
from model.threadgov import ThreadGovernor, install

__all__ = ["apply_thread_budget", "apply_threads", "set_threads"]

logger = logging.getLogger(__name__)

# The last thread-count line logged at INFO in this process (apply_thread_budget).
_last_reported: str | None = None


def set_threads(n: int) -> None:
    """torch's intra-op threads and Faiss's OpenMP threads to ``n``."""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    configure_threads(n)


def _load_signal() -> Callable[[], tuple[float, float] | None]:
    """The governor's view of the CPUs: (idle, others' use) per window (core.cpuload)."""
    cpu = CpuLoad()

    def signal() -> tuple[float, float] | None:
        s = cpu.sample()
        return None if s is None else (s.idle, s.others)

    return signal


def apply_thread_budget(threads: int | None) -> CpuBudget:
    """Set torch and Faiss to ``threads``, else ``$TOWERFLOW_THREADS``, else the CPUs this
    process may use (affinity mask, cgroup quota); returns the count applied and why.

    A default count above 1 gets a ``ThreadGovernor`` (unless ``$TOWERFLOW_ADAPTIVE_THREADS``
    is 0), so training, embedding and evaluation loops may run with fewer threads while
    the cores are contended; an explicit count never changes."""
    budget = thread_budget(threads or None)
    set_threads(budget.count)
    adaptive = not budget.explicit and budget.count > 1 and adaptive_enabled()
    install(ThreadGovernor(budget.count, set_threads, load=_load_signal()) if adaptive else None)
    message = f"threads: {budget.count} ({budget.reason})" + (
        "; adapts to the load, at most this many" if adaptive else ""
    )
    # Every step applies the budget; the terminal hears it once, or when it changes.
    global _last_reported
    logger.log(logging.DEBUG if message == _last_reported else logging.INFO, message)
    _last_reported = message
    return budget


def apply_threads(threads: int | None) -> int:
    """``apply_thread_budget(threads).count``: the thread count applied."""
    return apply_thread_budget(threads).count

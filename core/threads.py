"""Thread settings applied at the start of every compute-heavy task.

torch and Faiss each load their own OpenMP runtime, so both are set explicitly; otherwise
each may start one thread per core on top of the other and oversubscribe the machine.
The default count is the CPUs the process may really use (``core.cpus.cpu_budget``).
"""

from __future__ import annotations

import logging

import torch

from core.cpus import CpuBudget, thread_budget
from model.index import configure_threads

__all__ = ["apply_thread_budget", "apply_threads"]

logger = logging.getLogger(__name__)


def apply_thread_budget(threads: int | None) -> CpuBudget:
    """Set torch and Faiss to ``threads``, else ``$TOWERFLOW_THREADS``, else the CPUs this
    process may use (affinity mask, cgroup quota); returns the count applied and why."""
    budget = thread_budget(threads or None)
    if torch.get_num_threads() != budget.count:
        torch.set_num_threads(budget.count)
    configure_threads(budget.count)
    logger.info("threads: %d (%s)", budget.count, budget.reason)
    return budget


def apply_threads(threads: int | None) -> int:
    """``apply_thread_budget(threads).count``: the thread count applied."""
    return apply_thread_budget(threads).count

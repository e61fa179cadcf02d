"""Thread settings applied at the start of every compute-heavy task.

torch and Faiss each load their own OpenMP runtime, so both are set explicitly; otherwise
each may start one thread per core on top of the other and oversubscribe the machine.
"""

from __future__ import annotations

import os

import torch

from model.index import configure_threads

__all__ = ["apply_threads"]


def apply_threads(threads: int | None) -> int:
    """Set torch and Faiss to ``threads`` (None = every core); returns the count applied."""
    n = threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    configure_threads(n)
    return n

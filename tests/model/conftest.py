"""Fixtures of the model tests: a thread governor pinned at a count."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import torch

from model.threadgov import ThreadGovernor, install


class Recording(ThreadGovernor):
    """A governor pinned at ``current`` (its clock never moves, so no window ends and it
    never probes) that records the units of each tick and the thread that ticked."""

    def __init__(self, max_threads: int, current: int) -> None:
        super().__init__(max_threads, torch.set_num_threads, clock=lambda: 0.0)
        self.pin(current)
        self.ticks: list[tuple[float, int]] = []

    def pin(self, n: int) -> None:
        """What a switch to ``n`` does (without the probes that lead to one)."""
        self.current = self.applied = n
        self.set_threads(n)

    def tick(self, units: float) -> None:
        self.ticks.append((units, threading.get_ident()))
        super().tick(units)


@pytest.fixture
def governor() -> Iterator[Callable[[int, int], Recording]]:
    threads = torch.get_num_threads()

    def make(max_threads: int, current: int) -> Recording:
        gov = Recording(max_threads, current)
        install(gov)
        return gov

    yield make
    install(None)
    torch.set_num_threads(threads)

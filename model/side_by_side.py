"""Independent batches side by side while the cores are shared (``model.threadgov``).

Below its ceiling the thread governor has found OpenMP's spinning threads costly next to
other processes, and one thread then gets only its share of one CPU: ~2/3 of one next to
two busy threads, which keeps a GEMM-bound loop at ~0.35 of its quiet speed. Batches that
do not depend on each other (embedding, full-ranking blocks) can instead run on
``batch_workers()`` threads at once, each at the governor's count, sleeping when they
wait: the process then gets its fair share of the cores (measured: docs/performance.md,
"Batches side by side").

Threads pull the next batch when they finish one and tick the governor themselves, so
none waits on the caller, whose thread sleeps until the threads are done or the governor
changes how many may work. That follows the governor batch by batch: a thread whose slot
is at or above ``batch_workers()`` stops at its next batch, a missing slot is started
at once, and slot 0 always works (at the ceiling it is the loop's one thread, with every
OpenMP thread). Each batch writes its own rows, so the results do not depend on which
thread ran them. A loop inside a batch runs inline and does not tick the governor
(``model.threadgov.in_batch_thread``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch

from model.threadgov import Tick, active, batch_workers, in_batch_thread, mark_batch_thread

__all__ = ["run_batches", "run_side_by_side", "spread"]

# A batch as (lo, hi) rows; it must write its results itself, into rows only it owns.
Batch = Callable[[int, int], None]


class _Rows:
    """Row ranges ``[lo, hi)`` of ``size`` handed out in order to whichever thread asks."""

    def __init__(self, lo: int, n: int, size: int) -> None:
        self.next, self.n, self.size = lo, n, size
        self.lock = threading.Lock()

    def take(self) -> tuple[int, int] | None:
        with self.lock:
            if self.next >= self.n:
                return None
            lo = self.next
            self.next = min(lo + self.size, self.n)
            return lo, self.next


def _count() -> int:
    """The OpenMP count batches run at: the governor's applied one, else torch's."""
    governor = active()
    return torch.get_num_threads() if governor is None else governor.applied


def _apply_here(n: int) -> None:
    """Set this thread's OpenMP counts (torch's and Faiss's: each is per thread) to ``n``."""
    governor = active()
    if governor is None:
        torch.set_num_threads(n)
    else:
        governor.set_threads(n)


def spread() -> int:
    """``batch_workers()``, or 1 on a thread that already runs batches side by side (no
    threads of threads: the batch already has its share of the cores)."""
    return 1 if in_batch_thread() else batch_workers()


class _Rounds:
    """The governor's tick, shared by the threads: once per round of as many completions as
    threads working, with their items. Threads side by side often finish together, and
    timing each completion alone would read one long step and one of ~0 s."""

    def __init__(self, tick: Tick) -> None:
        self.tick = tick
        self.lock = threading.Lock()
        self.working = 0
        self.units = self.done = 0
        self.workers = batch_workers()

    def completed(self, units: int) -> bool:
        """Count a finished batch; True when the governor changed how many threads may
        work (the caller's thread must start or reap some). The governor may set a thread
        count from here: for this thread, and the others take it up (``_count``) before
        their next batch."""
        with self.lock:
            self.units += units
            self.done += 1
            if self.done < self.working:
                return False
            self.tick(self.units)
            self.units = self.done = 0
            workers, self.workers = self.workers, batch_workers()
            return workers != self.workers

    def flush(self) -> None:
        with self.lock:
            if self.units:
                self.tick(self.units)
                self.units = self.done = 0


def run_side_by_side(batch: Batch, lo: int, n: int, size: int, tick: Tick) -> None:
    """Run ``batch`` over rows ``[lo, n)`` in ranges of ``size`` on worker threads, as many
    at once as ``batch_workers()`` says, each at the governor's thread count; returns when
    every range is done, with the caller's thread at the governor's last count.

    ``tick`` (the governor's) is called by the threads themselves, under a lock
    (``_Rounds``): waking the caller's thread for every batch cost ~15% of the throughput
    on shared cores. The first error raised by a batch is raised here, after every thread
    has stopped (ranges not yet started are dropped).
    """
    rows = _Rows(lo, n, size)
    rounds = _Rounds(tick)
    events: queue.SimpleQueue[tuple[int, str | BaseException]] = queue.SimpleQueue()
    stop = threading.Event()

    def work(slot: int) -> None:
        mark_batch_thread()
        mine = 0
        try:
            with torch.inference_mode():
                while not stop.is_set() and (slot == 0 or slot < rounds.workers):
                    if mine != (count := _count()):
                        mine = count
                        _apply_here(count)
                    r = rows.take()
                    if r is None:
                        break
                    batch(*r)
                    if rounds.completed(r[1] - r[0]):
                        events.put((slot, "plan"))
        except BaseException as e:  # handed to the caller's thread, which raises it
            events.put((slot, e))
        finally:
            with rounds.lock:
                rounds.working -= 1
            events.put((slot, "exit"))

    running: dict[int, threading.Thread] = {}
    error: BaseException | None = None
    try:
        while True:
            if error is None and rows.next < n:
                for slot in range(rounds.workers):
                    if slot not in running:
                        with rounds.lock:
                            rounds.working += 1
                        running[slot] = threading.Thread(
                            target=work, args=(slot,), name=f"batches-{slot}", daemon=True
                        )
                        running[slot].start()
            if not running:
                break
            slot, event = events.get()
            if isinstance(event, BaseException):
                error = error or event
                stop.set()
            elif event == "exit":
                running.pop(slot).join()
        rounds.flush()
    finally:
        stop.set()
        for thread in running.values():
            thread.join()
    # A switch made on a batch thread set torch's and Faiss's OpenMP counts for that
    # thread only: apply it to the caller's.
    _apply_here(_count())
    if error is not None:
        raise error


def run_batches(
    batch: Batch, n: int, size: int, tick: Tick, *, parallel: bool = True, shrink: bool = False
) -> None:
    """Run ``batch`` over rows ``[0, n)`` in ranges of ``size``, inline on the caller's
    thread and ticking ``tick`` after each, until a range at which ``spread()`` allows more
    than one thread (``parallel``: the loop may be spread at all; not for a GPU) and more
    than one range is left: the rest then runs side by side (``run_side_by_side``). With
    ``shrink`` those ranges are ``size / workers``, so as many at once hold the memory of
    one (score blocks)."""
    for lo in range(0, n, size):
        workers = spread() if parallel else 1
        part = -(-size // workers) if shrink else size
        if workers > 1 and n - lo > part:
            run_side_by_side(batch, lo, n, part, tick)
            return
        hi = min(lo + size, n)
        batch(lo, hi)
        tick(hi - lo)

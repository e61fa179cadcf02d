"""Adaptive thread count for loops of similar steps (training batches, embedding batches,
evaluation blocks): keep the count that runs the steps fastest *now*.

Why: torch and Faiss use GNU OpenMP, whose idle threads spin before they sleep. On quiet
cores spinning is what makes two threads ~1.6x one on a training step; on cores another
busy process shares, each spinning thread steals the time of the one doing the work and
the step runs ~5x slower than quiet (docs/performance.md, "Shared CPUs"). The wait policy
is read once, when the runtime loads, so it cannot follow the load; the thread count can
(``torch.set_num_threads`` / ``faiss.omp_set_num_threads`` between steps). The governor
times the steps at the current count, now and then tries a neighbouring count for a
quarter of a second, and keeps whichever does more work per second. Steps slowing down
sharply (a co-tenant arriving) trigger a probe at once; a stable choice backs off to a
probe every ``max_interval_s``.

Process-wide by nature (OpenMP thread counts are per process): ``install`` makes one
governor active and ``adaptive_loop`` hands loops its tick function, or a no-op when none
is installed (explicit thread counts, GPUs, tests that need bitwise reproducibility).
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "ThreadGovernor",
    "Tick",
    "active",
    "adaptive_loop",
    "batch_workers",
    "in_batch_thread",
    "install",
    "ladder",
    "mark_batch_thread",
]

log = logging.getLogger(__name__)

Tick = Callable[[float], None]


def ladder(max_threads: int) -> tuple[int, ...]:
    """Counts the governor may choose: ``max_threads`` halved down to 1, descending
    (8 -> (8, 4, 2, 1)); a neighbour is the next one up or down."""
    if max_threads < 1:
        raise ValueError(f"max_threads must be >= 1, got {max_threads}")
    counts = [max_threads]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return tuple(counts)


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


@dataclass
class ThreadGovernor:
    """Chooses among ``ladder(max_threads)`` by measured seconds per unit of work.

    ``set_threads(n)`` applies a count (torch's and Faiss's). ``tick(units)``, called after
    each step with its work (examples, items, users), times the step since the previous
    tick. Steps are grouped in windows of at least ``window_s`` seconds and ``window_steps``
    steps; a window's level is its median seconds per unit. A probe is three windows, A-C-B:
    the current count (A), a neighbouring count (C), the current count again (B); the
    neighbour is adopted when ``C * switch_gain < min(A, B)``, so a change of load during
    the probe does not pass for a better count; a neighbour ``decisive`` times faster than
    A is adopted without B (B would run more steps at the bad count). A larger count must
    win two probes in a row: on shared cores a wrong move up costs far more (a step with
    spinning threads can take 10-30x longer) than a wrong move down on quiet ones (~1.6x).
    The first step after any change of count is not timed (the OpenMP pool wakes or
    grows), but any step of the neighbour, that one included, ``abort`` times slower than
    A ends the probe at once.

    Probes start as soon as a first level is known, then back off from ``min_interval_s``
    to ``max_interval_s`` while the choice holds. A window ``slowdown`` times slower than
    the reference level (a co-tenant arriving: spinning threads lose ~5x) probes at once;
    so does a single step ``abort`` times slower. A speed-up waits for the next scheduled
    probe, since a thread alone on shared cores sees ~2x swings from where the scheduler
    puts it.

    ``load`` (optional), read at the first step ``window_s`` after the previous reading,
    returns ``(idle, others)``: the idle CPUs and the CPUs other processes used since
    then, or None when unknown (``core.cpuload``). With it, other processes starting to
    use ``others_busy`` of a CPU probe a smaller count at that step (dropping a probe under
    way); a larger count is tried only while there is room for it, ``idle_to_add`` of a
    CPU idle or other processes under ``others_busy`` (an extra thread on busy cores spins
    where another process works, and each such probe costs a few slow steps), and at once
    when room appears. Idle alone is not the test: below its ceiling the process may fill
    every CPU itself with batches run side by side (``batch_workers``), and then no CPU
    is idle however quiet the machine is.
    """

    max_threads: int
    set_threads: Callable[[int], None]
    clock: Callable[[], float] = time.perf_counter
    window_s: float = 0.25
    window_steps: int = 3
    min_interval_s: float = 1.0
    max_interval_s: float = 32.0
    switch_gain: float = 1.1
    slowdown: float = 1.5
    abort: float = 3.0
    decisive: float = 4.0
    load: Callable[[], tuple[float, float] | None] | None = None
    others_busy: float = 0.5
    idle_to_add: float = 0.75
    counts: tuple[int, ...] = field(init=False)
    current: int = field(init=False)
    applied: int = field(init=False)  # the count last set: ``current``, or a probe's
    switches: int = field(init=False, default=0)
    probes: int = field(init=False, default=0)
    _phase: str = field(init=False, default="run")  # run | candidate | confirm
    _window: list[float] = field(init=False, default_factory=list)
    _window_start: float = field(init=False, default=0.0)
    _reference: float | None = field(init=False, default=None)
    _before: float = field(init=False, default=0.0)
    _candidate: int = field(init=False, default=0)
    _candidate_level: float = field(init=False, default=0.0)
    _settle: int = field(init=False, default=1)
    _interval: float = field(init=False)
    _next_probe: float = field(init=False)
    _last: float | None = field(init=False, default=None)
    _flip: bool = field(init=False, default=True)
    _pending: int | None = field(init=False, default=None)
    _was_busy: bool = field(init=False, default=False)
    _was_free: bool = field(init=False, default=True)
    _room: bool | None = field(init=False, default=None)
    _arrived: bool = field(init=False, default=False)
    _freed: bool = field(init=False, default=False)
    _sensed_at: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        if self.window_steps < 1 or self.window_s < 0:
            raise ValueError(
                f"need window_steps >= 1 and window_s >= 0, got {self.window_steps}, "
                f"{self.window_s}"
            )
        self.counts = ladder(self.max_threads)
        self.current = self.applied = self.max_threads
        self._interval = self.min_interval_s
        self._next_probe = self.clock()  # the first probe as soon as a level is measured

    def start(self) -> Tick:
        """Begin a loop: the next tick times from now; returns ``tick``."""
        self._last = self.clock()
        self._settle = max(self._settle, 1)  # the first step of a loop warms caches
        return self.tick

    def tick(self, units: float) -> None:
        """Record a step that did ``units`` of work (> 0) since the previous tick."""
        now = self.clock()
        last, self._last = self._last, now
        if last is None or units <= 0 or len(self.counts) == 1:
            return
        per_unit = (now - last) / units
        if self._phase == "candidate" and per_unit > self._before * self.abort:
            self._abort(now)  # one step of a bad count already cost `abort` steps
            return
        self._sense(now)
        trying_fewer = self._phase == "candidate" and self._candidate < self.current
        if self._arrived and not trying_fewer:
            self._arrived = False
            if self.current > self.counts[-1]:
                # Other processes took the CPUs: act at this step, not at the end of a
                # window of steps that spinning threads may each make 10x slower. A probe
                # under way compared counts under another load: it is dropped.
                self._phase, self._pending, self._window = "run", None, []
                self._begin_probe(per_unit, now, down=True)
                return
        if (
            self._phase == "run"
            and self._reference is not None
            and per_unit > self._reference * self.abort
            and self._settle == 0
        ):
            self._window = []
            self._begin_probe(per_unit, now)  # one step of a collapse is enough to act on
            return
        if self._settle > 0:
            self._settle -= 1
            self._window, self._window_start = [], now
            return
        self._window.append(per_unit)
        if len(self._window) < self.window_steps or now - self._window_start < self.window_s:
            return
        level = _median(self._window)
        self._window, self._window_start = [], now
        if self._phase == "candidate":
            self._candidate_level = level
            if level * self.decisive < self._before:
                # Too big a gain for drift to explain: decide without B, at the candidate.
                self._decide(self._before, now, at_candidate=True)
            else:
                self._phase = "confirm"
                self._apply(self.current)
        elif self._phase == "confirm":
            self._decide(level, now, at_candidate=False)
        else:
            if self._reference is None:
                self._reference = level
            freed, self._freed = self._freed, False
            if freed and self.current < self.counts[0]:
                # Room appeared (the other processes left): try more threads now rather
                # than at a probe that waiting on busy CPUs has backed off to 32 s.
                self._interval = self.min_interval_s
                self._begin_probe(level, now, up=True)
            elif now >= self._next_probe or level > self._reference * self.slowdown:
                self._begin_probe(level, now)

    def _sense(self, now: float) -> None:
        """Read the load once a window's time has passed since the last reading (at any
        step, however many steps the window has), and note other processes arriving
        (``_arrived``) and room appearing (``_freed``) until acted on."""
        if self.load is None or now - self._sensed_at < self.window_s:
            return
        self._sensed_at = now
        signal = self.load()
        busy = signal is not None and signal[1] >= self.others_busy
        self._arrived |= busy and not self._was_busy
        self._was_busy = busy
        self._room = None if signal is None else signal[0] >= self.idle_to_add or not busy
        free = bool(self._room)
        self._freed |= free and not self._was_free
        self._was_free = free

    def _apply(self, n: int) -> None:
        self.set_threads(n)
        self.applied = n
        self._settle = 1

    def _neighbour(self) -> int:
        """The next count down or up the ladder; alternates where both exist. A count
        that won a probe once and needs a second win is tried again."""
        if self._pending is not None:
            return self._pending
        i = self.counts.index(self.current)
        options = [j for j in (i + 1, i - 1) if 0 <= j < len(self.counts)]
        self._flip = not self._flip
        return self.counts[options[int(self._flip) % len(options)]]

    def _begin_probe(self, level: float, now: float, down: bool = False, up: bool = False) -> None:
        i = self.counts.index(self.current)
        candidate = self.counts[i + 1] if down else self.counts[i - 1] if up else self._neighbour()
        if candidate > self.current and self._room is False:
            # No room for another thread: it would only spin beside other processes.
            self._pending = None
            self._reference = level
            self._interval = min(self._interval * 2, self.max_interval_s)
            self._next_probe = now + self._interval
            return
        self._before = level
        self._candidate = candidate
        self._phase = "candidate"
        self.probes += 1
        self._apply(self._candidate)

    def _abort(self, now: float) -> None:
        self._phase = "run"
        self._pending = None
        self._apply(self.current)
        self._interval = min(self._interval * 2, self.max_interval_s)
        self._next_probe = now + self._interval

    def _decide(self, after: float, now: float, *, at_candidate: bool) -> None:
        self._phase = "run"
        base = min(self._before, after)
        won = self._candidate_level * self.switch_gain < base
        if won and self._candidate > self.current and self._pending is None:
            # More threads on cores that may be shared: a wrong move costs up to ~20x, so
            # it must win twice in a row (the next probe, at once, tries it again).
            self._pending = self._candidate
            self._reference = after
            self._next_probe = now
            if at_candidate:
                self._apply(self.current)
            return
        self._pending = None
        if won:
            log.info(
                "threads: %d -> %d (%.3g -> %.3g s per 1k units)",
                self.current,
                self._candidate,
                base * 1e3,
                self._candidate_level * 1e3,
            )
            self.current = self._candidate
            self.switches += 1
            self._apply(self.current)
            self._reference = None  # re-measured at the new count
            self._interval = self.min_interval_s
        elif after > self._before * self.slowdown:
            # The load rose during the probe: the comparison is void, probe again now.
            self._reference = after
            self._interval = self.min_interval_s
            now -= self._interval
        else:
            self._reference = after
            self._interval = min(self._interval * 2, self.max_interval_s)
        self._next_probe = now + self._interval


_ACTIVE: list[ThreadGovernor] = []


def install(governor: ThreadGovernor | None) -> None:
    """Make ``governor`` the process's active one (None: loops run at a fixed count)."""
    _ACTIVE.clear()
    if governor is not None:
        _ACTIVE.append(governor)


def active() -> ThreadGovernor | None:
    """The governor ``install`` set, if any."""
    return _ACTIVE[0] if _ACTIVE else None


def _no_tick(units: float) -> None:
    del units


# Threads that run batches side by side (model.side_by_side): they tick the governor as
# one loop, under a lock, so a loop nested in a batch must not tick it on its own.
_batch_thread = threading.local()


def mark_batch_thread() -> None:
    """Mark the calling thread as one running batches side by side."""
    _batch_thread.marked = True


def in_batch_thread() -> bool:
    """Whether the calling thread runs batches side by side."""
    return bool(getattr(_batch_thread, "marked", False))


def adaptive_loop(enabled: bool = True) -> Tick:
    """The tick function for a loop about to start: the active governor's (timing from
    now), or a no-op when none is installed, ``enabled`` is False (a GPU loop) or the loop
    is nested in a batch run side by side (the batches' own loop ticks for it)."""
    governor = active()
    if governor is None or not enabled or in_batch_thread():
        return _no_tick
    return governor.start()


def batch_workers() -> int:
    """How many batches a loop of independent batches (embedding) runs side by side: the
    active governor's ceiling over the count it applied (2 // 1 = 2 while the cores are
    shared; a probe of more threads runs fewer batches at once), each batch at that
    count; 1 without a governor.

    Why: below its ceiling the governor has found OpenMP's spinning threads costly, and
    one thread next to busy processes gets only its share of one CPU (~2/3 of one next to
    two busy threads). Batches side by side, each on one thread that sleeps when it waits,
    take the process's fair share of the cores instead (docs/performance.md)."""
    governor = active()
    return 1 if governor is None else max(1, governor.max_threads // governor.applied)

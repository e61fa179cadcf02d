"""Measuring primitives: wall-clock samples and their medians, A/B runs interleaved so both
sides see the same machine noise, peak resident memory per block, threads, and a machine
calibration figure (the machines are shared: absolute times only mean something next to it).
"""

from __future__ import annotations

import math
import os
import re
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

__all__ = [
    "RSS_METHOD",
    "ABResult",
    "PeakRss",
    "RssRuns",
    "Samples",
    "calibrate_gemm",
    "interleave",
    "percentiles",
    "ratio",
    "read_threads",
    "set_threads",
]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field_name: str) -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    match = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if unsupported."""
    try:
        # "5" resets the peak RSS to the current RSS (Linux >= 4.0, proc(5)).
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _max_rss_kib() -> int:
    # ru_maxrss is KiB on Linux: the process's lifetime peak, never reset.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


RSS_METHOD = (
    "in-process: /proc/self/clear_refs resets the kernel's peak-RSS counter (VmHWM) before "
    "each step and VmHWM is read after it, so each figure is that step's true peak RSS of the "
    "whole process (including data it was given); 'over start' subtracts the RSS at the "
    "step's start. End to end: the child's ru_maxrss from wait4."
)


@dataclass
class PeakRss:
    """``with PeakRss() as m: ...`` -> ``m.peak_mib`` (process peak RSS during the block) and
    ``m.delta_mib`` (peak minus the RSS when the block started).

    Falls back to ``ru_maxrss`` (a lifetime peak, so an upper bound) where VmHWM cannot be
    reset; ``exact`` says which one was used.
    """

    start_mib: float = 0.0
    peak_mib: float = 0.0
    exact: bool = False

    @property
    def delta_mib(self) -> float:
        return max(self.peak_mib - self.start_mib, 0.0)

    def __enter__(self) -> PeakRss:
        self.exact = _reset_high_water_mark()
        self.start_mib = (_status_kib("VmRSS") or _max_rss_kib()) / 1024
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        hwm = _status_kib("VmHWM") if self.exact else None
        self.peak_mib = (hwm if hwm is not None else _max_rss_kib()) / 1024

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "peak_mib": round(self.peak_mib, 1),
            "over_start_mib": round(self.delta_mib, 1),
            "exact": self.exact,
        }


@dataclass
class Samples:
    """Wall-clock seconds of repeated runs of one thing."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median, "samples_s": [round(s, 6) for s in self.seconds]}


@dataclass
class RssRuns:
    """``PeakRss`` of several runs of one thing: the largest peak and the largest rise."""

    runs: list[PeakRss] = field(default_factory=list)

    def as_dict(self) -> dict[str, float | bool]:
        return {
            "peak_mib": round(max((r.peak_mib for r in self.runs), default=0.0), 1),
            "over_start_mib": round(max((r.delta_mib for r in self.runs), default=0.0), 1),
            "exact": all(r.exact for r in self.runs),
        }


@dataclass
class ABResult:
    """Interleaved samples of ``ours`` and ``bare`` plus the last value each returned."""

    ours: Samples
    bare: Samples
    ours_value: Any
    bare_value: Any
    ours_rss: RssRuns
    bare_rss: RssRuns

    @property
    def ratio(self) -> float:
        """Time ours / time bare (> 1: ours is slower)."""
        return ratio(self.ours.median, self.bare.median)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


def _timed(fn: Callable[[Any], Any], arg: Any) -> tuple[float, Any, PeakRss]:
    with PeakRss() as rss:
        start = time.perf_counter()
        value = fn(arg)
        seconds = time.perf_counter() - start
    return seconds, value, rss


def _none() -> None:
    return None


def interleave(
    ours: Callable[[Any], Any],
    bare: Callable[[Any], Any],
    repeats: int,
    warmup: int = 1,
    prepare: Callable[[], Any] = _none,
    min_total_s: float = 0.0,
    max_repeats: int = 25,
) -> ABResult:
    """Run ``ours(prepare())`` and ``bare(prepare())`` alternately, ``repeats`` times each,
    after ``warmup`` untimed rounds; ``prepare`` (e.g. a fresh model) is not timed.

    With ``min_total_s`` (and a warm-up), fast calls are repeated more, up to
    ``max_repeats``, so each side's samples add up to about that long: medians of
    millisecond calls on a noisy machine need more than three samples. The order flips
    every round so neither side always runs second on a warm cache. Each call is wrapped
    in ``PeakRss``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    warm_s = math.inf
    for _ in range(warmup):
        arg = prepare()
        start = time.perf_counter()
        ours(arg)
        warm_s = min(warm_s, time.perf_counter() - start)
        bare(prepare())
    if min_total_s > 0 and math.isfinite(warm_s):
        wanted = math.ceil(min_total_s / max(warm_s, 1e-6))
        repeats = max(repeats, min(max_repeats, wanted))
    sides: dict[str, tuple[Callable[[Any], Any], Samples, list[Any], RssRuns]] = {
        "ours": (ours, Samples(), [None], RssRuns()),
        "bare": (bare, Samples(), [None], RssRuns()),
    }
    for r in range(repeats):
        for name in ("ours", "bare") if r % 2 == 0 else ("bare", "ours"):
            fn, samples, value, rss = sides[name]
            seconds, value[0], call_rss = _timed(fn, prepare())
            samples.seconds.append(seconds)
            rss.runs.append(call_rss)
    (_, a, a_val, a_rss), (_, b, b_val, b_rss) = sides["ours"], sides["bare"]
    return ABResult(a, b, a_val[0], b_val[0], a_rss, b_rss)


def percentiles(ms: list[float]) -> tuple[float, float]:
    """(p50, p99) of a list of milliseconds."""
    p50, p99 = np.percentile(np.asarray(ms, np.float64), [50, 99])
    return float(p50), float(p99)


def read_threads() -> dict[str, int]:
    """The thread counts torch and Faiss report now."""
    import faiss
    import torch

    return {
        "cores": os.cpu_count() or 1,
        "torch": torch.get_num_threads(),
        "torch_interop": torch.get_num_interop_threads(),
        "faiss": int(faiss.omp_get_max_threads()),
    }


def set_threads(n: int | None) -> dict[str, int]:
    """Set torch and Faiss thread counts (None = every core) and read both back.

    torch and Faiss each load their own OpenMP runtime (docs/performance.md), so both are set.
    """
    import torch

    from model.index import configure_threads

    want = n or os.cpu_count() or 1
    torch.set_num_threads(want)
    configure_threads(want)
    return {"requested": want, **read_threads()}


def calibrate_gemm(n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of a float32 n x n matrix product in numpy (median of ``repeats``): a gauge of
    how busy the shared machine is when the suite starts and ends."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # first call pays BLAS start-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9

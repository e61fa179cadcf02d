"""core.cpuload reads /proc/stat's lines of the process's CPUs: idle capacity, and other
processes' use as the CPUs' busy time less this process's own CPU time."""

from __future__ import annotations

import os
from pathlib import Path

from core.cpuload import CpuLoad

HZ = float(os.sysconf("SC_CLK_TCK"))


def _stat(path: Path, cpus: dict[int, tuple[float, float]]) -> None:
    """cpuN user nice system idle iowait irq softirq steal guest guest_nice, in ticks;
    ``cpus``: N -> (busy ticks as user time, idle ticks)."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"]
    lines += [f"cpu{n} {int(b)} 0 0 {int(i)} 0 0 0 0 0 0" for n, (b, i) in cpus.items()]
    path.write_text("\n".join([*lines, "intr 1 2 3", "ctxt 5"]) + "\n")


def test_idle_and_other_processes_are_read_from_the_process_cpus(tmp_path: Path) -> None:
    stat, now, own = tmp_path / "stat", [0.0], [0.0]
    load = CpuLoad(cpus={0, 1}, stat=stat, clock=lambda: now[0], own_cpu_s=lambda: own[0])
    _stat(stat, {0: (0, 0), 1: (0, 0), 2: (0, 0)})
    assert load.sample() is None  # nothing to compare with yet
    # One second: CPUs 0 and 1 fully busy, of which this process used 0.5 s; CPU 2
    # (outside the mask) busy too, which does not count.
    now[0], own[0] = 1.0, 0.5
    _stat(stat, {0: (HZ, 0), 1: (HZ, 0), 2: (HZ, 0)})
    s = load.sample()
    assert s is not None and s.idle == 0.0 and abs(s.others - 1.5) < 1e-9
    # The next second: CPU 1 idle, this process used CPU 0 whole.
    now[0], own[0] = 2.0, 1.5
    _stat(stat, {0: (2 * HZ, 0), 1: (HZ, HZ), 2: (2 * HZ, 0)})
    s = load.sample()
    assert s is not None and s.idle == 1.0 and s.others == 0.0


def test_too_short_a_span_or_no_file_says_nothing(tmp_path: Path) -> None:
    stat, now = tmp_path / "stat", [0.0]
    load = CpuLoad(cpus={0}, stat=stat, clock=lambda: now[0], own_cpu_s=lambda: 0.0)
    _stat(stat, {0: (0, 0)})
    load.sample()
    now[0] = 0.01  # under the ticks' resolution: keep measuring from the first sample
    assert load.sample() is None
    now[0] = 1.0
    _stat(stat, {0: (0, HZ)})
    s = load.sample()
    assert s is not None and s.idle == 1.0
    stat.unlink()
    assert load.sample() is None


def test_the_real_proc_stat_gives_a_sample() -> None:
    load = CpuLoad()
    load.sample()
    x, end = 0, os.times().elapsed + 0.2
    while os.times().elapsed < end:  # keep one CPU busy in this process
        x += 1
    s = load.sample()
    if not Path("/proc/stat").exists():
        assert s is None
        return
    assert s is not None and 0.0 <= s.idle <= len(os.sched_getaffinity(0))
    assert s.others >= 0.0

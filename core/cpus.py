"""How many CPUs this process may really use, and the OpenMP environment that keeps
torch's and Faiss's threads from spinning on shared cores.

Standard library only: the CLI calls ``apply_openmp_defaults`` before torch or Faiss loads
(OpenMP runtimes read their environment once, when the library is loaded).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "ADAPTIVE_ENV",
    "CGROUP_ROOT",
    "OPENMP_DEFAULTS",
    "THREADS_ENV",
    "CpuBudget",
    "adaptive_enabled",
    "apply_openmp_defaults",
    "cpu_budget",
    "thread_budget",
]

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
THREADS_ENV: Final = "TOWERFLOW_THREADS"
ADAPTIVE_ENV: Final = "TOWERFLOW_ADAPTIVE_THREADS"

# torch (libgomp.so.1) and the faiss-cpu wheel (its own bundled libgomp) both use GNU
# OpenMP here; no Intel runtime is loaded (checked in /proc/self/maps). With libgomp's
# default, a thread that finds no work spins ~300k iterations before sleeping: fast on
# quiet cores, a collapse on shared ones (training kept ~20% of its quiet throughput next
# to one equal co-tenant). The wait policy is read once, at load, so it cannot follow the
# load; the thread count can, and model.threadgov adapts it (core.threads). PASSIVE makes
# idle threads sleep at once (libgomp: spin count 0): it keeps ~70% of the quiet speed
# next to a co-tenant, but costs 25-35% on quiet cores (a futex wake-up at each of a
# training step's many small parallel regions). So it is the default only where the
# process is confined to part of the machine (a container's CPU quota, an affinity mask):
# there the cores are shared by design, and spinning burns the quota. On a whole machine
# the spin default stays, with the adaptive count. KMP_BLOCKTIME is the same knob for
# Intel's runtime, harmless without it. The user's environment wins. Figures and commands:
# docs/performance.md, "Shared CPUs".
OPENMP_DEFAULTS: Final = {
    "OMP_WAIT_POLICY": "PASSIVE",
    "KMP_BLOCKTIME": "0",
}


@dataclass(frozen=True)
class CpuBudget:
    """A thread count and why (for the log line); ``explicit`` when a person chose it
    (config, option, ``$TOWERFLOW_THREADS``): such a count is kept, never adapted."""

    count: int
    reason: str
    explicit: bool = False


def apply_openmp_defaults(
    environ: MutableMapping[str, str] | None = None, budget: CpuBudget | None = None
) -> bool:
    """When the process may use fewer CPUs than the machine has (``budget``, default
    ``cpu_budget()``), set each of ``OPENMP_DEFAULTS`` the environment does not set
    already; a user's ``GOMP_SPINCOUNT`` (which libgomp prefers over the wait policy) also
    counts as a choice. Returns whether the process is confined. Call before torch or
    Faiss is imported; child processes inherit the result."""
    env = os.environ if environ is None else environ
    confined = (budget or cpu_budget()).count < (os.cpu_count() or 1)
    if not confined:
        return False
    for key, value in OPENMP_DEFAULTS.items():
        if key == "OMP_WAIT_POLICY" and "GOMP_SPINCOUNT" in env:
            continue
        env.setdefault(key, value)
    return True


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """(v2 path from the ``0::`` line, v1 path of the ``cpu`` controller) of this process."""
    v2 = v1 = None
    for line in (_read(proc_cgroup) or "").splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _below_root(root: Path, path: str) -> list[Path]:
    """``root/path`` and each folder above it up to ``root`` (a limit anywhere up the tree
    applies); just ``root`` when the path is not visible (a container's own namespace)."""
    here = root / path.lstrip("/")
    if not here.is_dir():
        return [root]
    chain = [here]
    while here != root and root in here.parents:
        here = here.parent
        chain.append(here)
    return chain


def _v2_quota(root: Path, path: str) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for folder in _below_root(root, path):
        quota, _, period = (_read(folder / "cpu.max") or "max").partition(" ")
        if quota == "max" or not period:
            continue
        cpus = max(1, math.ceil(int(quota) / int(period)))
        if best is None or cpus < best[0]:
            best = (cpus, f"cgroup cpu.max {quota}/{period} = {cpus}")
    return best


def _v1_quota(root: Path, path: str) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for mount in (root / "cpu,cpuacct", root / "cpu"):
        if not mount.is_dir():
            continue
        for folder in _below_root(mount, path):
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if not quota or not period or int(quota) <= 0 or int(period) <= 0:
                continue
            cpus = max(1, math.ceil(int(quota) / int(period)))
            if best is None or cpus < best[0]:
                best = (cpus, f"cgroup cpu.cfs_quota_us {quota}/{period} = {cpus}")
        break
    return best


def cpu_budget(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> CpuBudget:
    """The CPUs this process may use: the fewest of its affinity mask and its cgroup's CPU
    quota (v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us / cpu.cfs_period_us``, rounded up),
    else ``os.cpu_count()``. ``cgroup_root`` and ``proc_cgroup`` point tests at a fake tree.
    """
    limits: list[tuple[int, str]] = []
    v2, v1 = _cgroup_paths(proc_cgroup)
    quota = _v2_quota(cgroup_root, v2) if v2 is not None else None
    if quota is None and v1 is not None:
        quota = _v1_quota(cgroup_root, v1)
    if quota is not None:
        limits.append(quota)
    if hasattr(os, "sched_getaffinity"):
        n = len(os.sched_getaffinity(0))
        limits.append((n, f"affinity {n} CPUs"))
    if not limits:
        n = os.cpu_count() or 1
        return CpuBudget(n, f"os.cpu_count() {n}")
    count = min(n for n, _ in limits)
    return CpuBudget(count, ", ".join(why for _, why in limits))


def thread_budget(
    threads: int | None,
    environ: Mapping[str, str] | None = None,
    cgroup_root: Path = CGROUP_ROOT,
) -> CpuBudget:
    """The thread count to use: ``threads`` when given (config ``runtime.threads``, a
    command's ``--threads``), else ``$TOWERFLOW_THREADS``, else ``cpu_budget()``."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"thread count must be >= 1, got {threads}")
        return CpuBudget(threads, "explicit setting", explicit=True)
    raw = (os.environ if environ is None else environ).get(THREADS_ENV, "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ValueError(f"{THREADS_ENV} must be a whole number >= 1, got {raw!r}")
        return CpuBudget(int(raw), f"{THREADS_ENV}={raw}", explicit=True)
    return cpu_budget(cgroup_root)


def adaptive_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a default thread count may adapt to the load (``model.threadgov``):
    ``$TOWERFLOW_ADAPTIVE_THREADS`` 0 / false / no / off turns it off (bitwise-reproducible
    runs on a busy machine); anything else, or unset, leaves it on."""
    raw = (os.environ if environ is None else environ).get(ADAPTIVE_ENV, "").strip().lower()
    if raw in ("", "1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ADAPTIVE_ENV} must be 1 or 0 (true/false, on/off), got {raw!r}")

"""End to end: ``towerflow run`` in a child process with its own Prefect home and store,
timed from the outside; its peak RSS comes from ``wait4`` and, per process of its tree
(the flow, each Dask worker, each training rank, Prefect's server), from the kernel's
high-water mark sampled while it runs; its steps' times from the run's Prefect database."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "E2EFailedError",
    "ProcessPeaks",
    "end_to_end",
    "process_role",
    "run_child",
    "subflow_seconds",
    "task_seconds",
]


class E2EFailedError(RuntimeError):
    """The nightly run failed or timed out; the message ends with its stderr."""


def end_to_end(scale: str, threads: int, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Wall seconds, the flow's own seconds, the peak RSS and the steps' seconds of
    ``towerflow run --scale`` (see ``run_child``)."""
    root = workdir / "e2e-store"
    args = ["--scale", scale, "--root", str(root), "--threads", str(threads)]
    return run_child(args, workdir, timeout_s, name="e2e")


def run_child(
    run_args: list[str], workdir: Path, timeout_s: float, name: str = "run"
) -> dict[str, Any]:
    """``towerflow run RUN_ARGS --json`` in a child process with a fresh Prefect home under
    ``workdir``: wall and flow seconds, the peak RSS of its largest process (``wait4``
    counts the children it waited for: a local Dask cluster's workers too), the gate
    figures and ``steps``, each task's seconds (summed over a task's runs, e.g. shards)
    from the run's Prefect database."""
    home = workdir / f"{name}-prefect-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    # A configured API would send the run to someone's server instead of a temporary one.
    env.pop("PREFECT_API_URL", None)
    # -v: the steps' INFO lines (times, each step's peak RSS) go to the stderr file.
    cmd = [sys.executable, "-m", "cli", "-v", "run", *run_args, "--json"]
    out_path, err_path = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        peaks = ProcessPeaks(proc.pid)
        peaks.start()
        try:
            # wait4, not Popen.wait: it returns this child's own resource usage.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            peaks.stop()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = err_path.read_text(errors="replace")[-2000:]
        raise E2EFailedError(
            f"{' '.join(cmd)} exited with {proc.returncode} after {wall:.0f} s "
            f"(timeout {timeout_s:.0f} s):\n{tail}"
        )
    lines = out_path.read_text().strip().splitlines()
    result = json.loads(lines[-1])
    flow_s = float(result["seconds"])
    metrics = result["metrics"]
    gate = metrics.get("gate_metric", "recall@50")
    rankers = metrics.get("rankers", {})
    return {
        "command": " ".join(cmd[1:]),
        "wall_s": wall,
        "flow_s": flow_s,
        # Process start, imports and Prefect's temporary server, over the flow itself.
        "wall_over_flow": wall / flow_s if flow_s > 0 else float("inf"),
        "peak_rss_mib": usage.ru_maxrss / 1024,
        # Per role (flow process, Dask worker, training rank, Prefect server): the largest
        # high-water mark among its processes, and how many there were.
        "peak_rss_by_role_mib": peaks.by_role(),
        "processes": peaks.processes(),
        "version": result["version"],
        "gate_metric": gate,
        "model_gate_value": rankers.get("model", {}).get(gate),
        "popularity_gate_value": rankers.get("popularity", {}).get(gate),
        "oracle_gate_value": rankers.get("oracle", {}).get(gate),
        "steps": task_seconds(home / "prefect.db"),
        "subflows": subflow_seconds(home / "prefect.db"),
    }


def process_role(cmdline: str, is_root: bool) -> str:
    """What a process of a ``towerflow run`` tree is, from its command line."""
    if is_root:
        return "flow process"
    if "core.distributed" in cmdline:
        return "training rank"
    if "spawn_main" in cmdline or "forkserver" in cmdline:
        return "dask worker"  # a local cluster's worker (multiprocessing spawn)
    if "prefect" in cmdline and ("server" in cmdline or "uvicorn" in cmdline):
        return "prefect server"
    return "other"


class ProcessPeaks:
    """Samples a process tree every ``interval`` s: the peak RSS (the kernel's ``VmHWM``,
    which only grows, so a sample misses at most a dying process's last interval) of every
    process in it, kept by pid with its role (``process_role``)."""

    def __init__(self, root_pid: int, interval: float = 0.25) -> None:
        self.root_pid, self.interval = root_pid, interval
        self.peaks: dict[int, tuple[str, float]] = {}
        self.first_seen: dict[int, float] = {}  # seconds after start() a pid was first seen
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="process-peaks")

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def by_role(self) -> dict[str, dict[str, float]]:
        """Per role: ``max_mib`` (its largest process's peak) and ``processes``."""
        out: dict[str, dict[str, float]] = {}
        for role, mib in self.peaks.values():
            entry = out.setdefault(role, {"max_mib": 0.0, "processes": 0})
            entry["max_mib"] = max(entry["max_mib"], mib)
            entry["processes"] += 1
        return out

    def processes(self) -> list[dict[str, float | str]]:
        """Every process seen, in order of appearance: pid, role, peak MiB, first seen (s)."""
        return [
            {
                "pid": pid,
                "role": self.peaks[pid][0],
                "max_mib": self.peaks[pid][1],
                "first_seen_s": t,
            }
            for pid, t in sorted(self.first_seen.items(), key=lambda kv: kv[1])
            if pid in self.peaks
        ]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        """One pass over the tree: every process below the root (and the root)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    # Fields after the command's closing parenthesis: state, ppid, ...
                    stat = (entry / "stat").read_text()
                    parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        tree, frontier = {self.root_pid}, [self.root_pid]
        children: dict[int, list[int]] = {}
        for pid, ppid in parents.items():
            children.setdefault(ppid, []).append(pid)
        while frontier:
            for child in children.get(frontier.pop(), []):
                if child not in tree:
                    tree.add(child)
                    frontier.append(child)
        for pid in tree:
            # StopIteration: a zombie's status has no VmHWM line (it has exited).
            with contextlib.suppress(OSError, ValueError, StopIteration):
                status = Path(f"/proc/{pid}/status").read_text()
                hwm = next(ln for ln in status.splitlines() if ln.startswith("VmHWM:"))
                mib = int(hwm.split()[1]) / 1024
                role = self.peaks.get(pid, ("", 0.0))[0] or process_role(
                    Path(f"/proc/{pid}/cmdline")
                    .read_bytes()
                    .replace(b"\0", b" ")
                    .decode(errors="replace"),
                    pid == self.root_pid,
                )
                self.peaks[pid] = (role, max(mib, self.peaks.get(pid, ("", 0.0))[1]))
                self.first_seen.setdefault(pid, time.monotonic() - self._t0)


def task_seconds(db: Path) -> dict[str, float]:
    """Seconds per task name (a run's suffix dropped; several runs of one task summed) from
    a Prefect home's SQLite database; empty when there is none."""
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        rows = con.execute(
            "SELECT name, total_run_time FROM task_run WHERE state_type = 'COMPLETED'"
        ).fetchall()
    out: dict[str, float] = {}
    for run_name, total in rows:
        task = str(run_name).rsplit("-", 1)[0]
        out[task] = out.get(task, 0.0) + _seconds(total)
    return out


def subflow_seconds(db: Path) -> dict[str, float]:
    """Wall seconds per flow name (runs of one flow summed) from a Prefect home's SQLite
    database: the sharded subflows' wall time, shards and merge included; empty when there
    is none."""
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        rows = con.execute(
            "SELECT flow.name, flow_run.total_run_time FROM flow_run JOIN flow "
            "ON flow_run.flow_id = flow.id WHERE flow_run.state_type = 'COMPLETED'"
        ).fetchall()
    out: dict[str, float] = {}
    for name, total in rows:
        out[str(name)] = out.get(str(name), 0.0) + _seconds(total)
    return out


def _seconds(value: object) -> float:
    # Prefect stores intervals as a datetime offset from the epoch on SQLite.
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()

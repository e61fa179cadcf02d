"""End to end: ``towerflow run`` in a child process with its own Prefect home and store,
timed from the outside; its peak RSS comes from ``wait4``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["E2EFailedError", "end_to_end"]


class E2EFailedError(RuntimeError):
    """The nightly run failed or timed out; the message ends with its stderr."""


def end_to_end(scale: str, threads: int, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Wall seconds, the flow's own seconds and the peak RSS of ``towerflow run --scale``."""
    home, root = workdir / "prefect-home", workdir / "e2e-store"
    home.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    # A configured API would send the run to someone's server instead of a temporary one.
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "cli", "run", "--scale", scale]
    cmd += ["--root", str(root), "--threads", str(threads), "--json"]
    out_path, err_path = workdir / "e2e.stdout", workdir / "e2e.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            # wait4, not Popen.wait: it returns this child's own resource usage.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
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
        "version": result["version"],
        "gate_metric": gate,
        "model_gate_value": rankers.get("model", {}).get(gate),
        "popularity_gate_value": rankers.get("popularity", {}).get(gate),
    }

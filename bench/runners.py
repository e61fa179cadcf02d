"""The nightly on the local runner and on a local Dask cluster, side by side on one stored
snapshot: wall time, time per step, peak RSS and the gate figures of each, alternated.

    python -m bench.runners --root STORE --snapshot ID [--workers 2] [--repeats 1]

Each run is ``towerflow run --snapshot ID --no-resume`` in a child process with a fresh
Prefect home (``bench.e2e.run_child``). Prints a markdown table; ``--out FILE`` also writes
the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.e2e import run_child

__all__ = ["compare_runners", "main", "render"]

log = logging.getLogger(__name__)

# Steps shown, in the nightly's order; the sharded runner's plan/shard/merge tasks are
# summed into the step they replace (a shard's seconds add up over workers: CPU-side work,
# not wall time).
_STEPS = {
    "prepare-data": ("prepare-data",),
    "train-model": ("train-model",),
    "embed-items": ("embed-items", "plan-embed-items", "embed-items-shard", "merge-embed-items"),
    "evaluate": ("evaluate", "plan-evaluate", "evaluate-shard", "merge-evaluate"),
    "build-index": (
        "build-index",
        "plan-build-index",
        "build-index-shard",
        "tune-index-shard",
        "merge-build-index",
    ),
    "publish-version": ("publish-version",),
}


def compare_runners(
    root: Path, snapshot: str, workers: int, repeats: int, workdir: Path, timeout_s: float
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` alternated runs of each runner on ``snapshot``; their figures by runner."""
    base = ["--snapshot", snapshot, "--root", str(root), "--no-resume"]
    variants = {
        "local": base,
        f"dask, {workers} workers": [
            *base,
            "--task-runner",
            "dask",
            "--dask-workers",
            str(workers),
        ],
    }
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, args in variants.items():
            log.info("repeat %d: %s", i + 1, name)
            tag = name.split(",")[0]
            out[name].append(run_child(args, workdir, timeout_s, name=f"{tag}-{i}"))
    return out


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in runs))


def _step(runs: list[dict[str, Any]], step: str) -> float:
    return float(statistics.median(sum(r["steps"].get(t, 0.0) for t in _STEPS[step]) for r in runs))


def render(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table: one column per runner (medians over repeats), ratio to the first."""
    names = list(results)
    first = results[names[0]]
    rows: list[tuple[str, Callable[[list[dict[str, Any]]], float]]] = [
        ("wall (s)", functools.partial(_median, key="wall_s")),
        ("flow (s)", functools.partial(_median, key="flow_s")),
    ]
    rows += [(f"{s} (task s)", functools.partial(_step, step=s)) for s in _STEPS]
    rows += [("peak RSS, largest process (MiB)", functools.partial(_median, key="peak_rss_mib"))]
    head = "| | " + " | ".join(names) + " | ratio |"
    lines = [head, "|---" * (len(names) + 2) + "|"]
    for label, fn in rows:
        values = [fn(results[n]) for n in names]
        ratio = values[-1] / values[0] if values[0] else float("nan")
        cells = " | ".join(f"{v:,.1f}" for v in values)
        lines.append(f"| {label} | {cells} | {ratio:.2f}x |")
    gates = [first[0]["gate_metric"]]
    for n in names:
        r = results[n][0]
        gates.append(
            f"{n}: model {r['model_gate_value']:.4f}, popularity {r['popularity_gate_value']:.4f}"
            + (f", oracle {r['oracle_gate_value']:.4f}" if r.get("oracle_gate_value") else "")
        )
    return "\n".join(lines) + "\n\n" + "; ".join(gates) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.runners", description=__doc__)
    p.add_argument("--root", type=Path, required=True, help="store holding the snapshot")
    p.add_argument("--snapshot", required=True, help="stored snapshot id")
    p.add_argument("--workers", type=int, default=2, help="local Dask workers (default: 2)")
    p.add_argument("--repeats", type=int, default=1, help="alternated repeats (default: 1)")
    p.add_argument("--workdir", type=Path, default=Path("bench/results/runners"))
    p.add_argument("--timeout", type=float, default=3600.0, help="per run, s (default: 3600)")
    p.add_argument("--out", type=Path, default=None, help="raw figures as JSON (default: none)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    a.workdir.mkdir(parents=True, exist_ok=True)
    results = compare_runners(a.root, a.snapshot, a.workers, a.repeats, a.workdir, a.timeout)
    if a.out:
        a.out.write_text(json.dumps(results, indent=2))
    sys.stdout.write(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

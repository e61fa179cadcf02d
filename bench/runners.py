"""The nightly on the local runner and on a local Dask cluster, side by side: wall time,
time per step, peak RSS (the largest process, the flow process, each Dask worker) and the
gate figures of each, alternated.

    python -m bench.runners --root STORE --snapshot ID [--workers 2] [--repeats 1]
    python -m bench.runners --root DIR --scale large [--workers 2]

With ``--snapshot``, each run is ``towerflow run --snapshot ID --no-resume`` on the stored
snapshot. With ``--scale``, each run starts on an empty store of its own under ROOT, so
both runners draw the synthetic snapshot too (by user blocks on the workers under Dask).
Runs are child processes with fresh Prefect homes (``bench.e2e.run_child``). Prints a
markdown table; ``--out FILE`` also writes the raw figures as JSON.
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
    "prepare-data": (
        "prepare-data",
        "plan-prepare-data",
        "prepare-data-shard",
        "merge-prepare-data",
    ),
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


# Subflows of the Dask runner: wall seconds, shards and merge included.
_SUBFLOWS = ("prepare-data-sharded", "embed-evaluate-sharded", "build-index-sharded")
_ROLES = ("flow process", "dask worker", "prefect server")


def compare_runners(
    root: Path,
    source: tuple[str, str],
    workers: int,
    repeats: int,
    workdir: Path,
    timeout_s: float,
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` alternated runs of each runner on ``source``: ("snapshot", id) in store
    ``root``, or ("scale", name) on an empty store per run under ``root``; their figures
    by runner."""
    kind, value = source
    dask = ["--task-runner", "dask", "--dask-workers", str(workers)]
    variants = {"local": [], f"dask, {workers} workers": dask}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(repeats):
        for name, extra in variants.items():
            log.info("repeat %d: %s", i + 1, name)
            tag = name.split(",")[0]
            if kind == "snapshot":
                base = ["--snapshot", value, "--root", str(root), "--no-resume"]
            else:
                store = root / f"{tag}-{i}"
                if store.exists():
                    raise FileExistsError(f"{store} exists: --scale runs need an empty store")
                base = ["--scale", value, "--root", str(store)]
            out[name].append(run_child([*base, *extra], workdir, timeout_s, name=f"{tag}-{i}"))
    return out


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in runs))


def _step(runs: list[dict[str, Any]], step: str) -> float:
    return float(statistics.median(sum(r["steps"].get(t, 0.0) for t in _STEPS[step]) for r in runs))


def _subflow(runs: list[dict[str, Any]], flow: str) -> float:
    return float(statistics.median(r.get("subflows", {}).get(flow, 0.0) for r in runs))


def _role_peak(runs: list[dict[str, Any]], role: str) -> float:
    peaks = [r.get("peak_rss_by_role_mib", {}).get(role, {}).get("max_mib", 0.0) for r in runs]
    return float(statistics.median(peaks))


def render(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table: one column per runner (medians over repeats), ratio to the first."""
    names = list(results)
    first = results[names[0]]
    rows: list[tuple[str, Callable[[list[dict[str, Any]]], float]]] = [
        ("wall (s)", functools.partial(_median, key="wall_s")),
        ("flow (s)", functools.partial(_median, key="flow_s")),
    ]
    rows += [(f"{s} (task s)", functools.partial(_step, step=s)) for s in _STEPS]
    rows += [
        (f"{f} subflow (wall s)", functools.partial(_subflow, flow=f))
        for f in _SUBFLOWS
        if any(f in r.get("subflows", {}) for rs in results.values() for r in rs)
    ]
    rows += [("peak RSS, largest process (MiB)", functools.partial(_median, key="peak_rss_mib"))]
    rows += [
        (f"peak RSS, {role} (largest, MiB)", functools.partial(_role_peak, role=role))
        for role in _ROLES
        if any(role in r.get("peak_rss_by_role_mib", {}) for rs in results.values() for r in rs)
    ]
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
    p.add_argument(
        "--root",
        type=Path,
        required=True,
        help="store holding the snapshot (--snapshot), or where the runs' stores go (--scale)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--snapshot", help="stored snapshot id")
    source.add_argument("--scale", help="draw the synthetic world at this scale in every run")
    p.add_argument("--workers", type=int, default=2, help="local Dask workers (default: 2)")
    p.add_argument("--repeats", type=int, default=1, help="alternated repeats (default: 1)")
    p.add_argument("--workdir", type=Path, default=Path("bench/results/runners"))
    p.add_argument("--timeout", type=float, default=3600.0, help="per run, s (default: 3600)")
    p.add_argument("--out", type=Path, default=None, help="raw figures as JSON (default: none)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    a.workdir.mkdir(parents=True, exist_ok=True)
    chosen = ("snapshot", a.snapshot) if a.snapshot else ("scale", a.scale)
    results = compare_runners(a.root, chosen, a.workers, a.repeats, a.workdir, a.timeout)
    if a.out:
        a.out.write_text(json.dumps(results, indent=2))
    sys.stdout.write(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What loading a snapshot's interactions costs in memory: the whole table read at once
(``read_table`` + ``Dataset.from_raw``) against ``core.dataio.load_dataset``, which streams
it in row batches straight into the position arrays. Each variant runs ``--repeats`` times
in a fresh child process; prints the median peak RSS above the process's baseline (after
imports) and the median load seconds, side by side with their ratio.

    python -m bench.load_memory --root STORE [--snapshot ID] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from core.dataio import load_dataset
from model.dataset import Dataset
from storage import (
    CATEGORIES,
    INTERACTIONS,
    ITEMS,
    USERS,
    Layout,
    arrow_to_vectors,
    list_snapshots,
    read_table,
)

__all__ = ["main", "measure"]

log = logging.getLogger(__name__)

VARIANTS = ("whole table", "streamed")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_whole(folder: Path) -> Dataset:
    users = read_table(folder / USERS.file_name, USERS)
    items = read_table(folder / ITEMS.file_name, ITEMS)
    cats = read_table(folder / CATEGORIES.file_name, CATEGORIES)
    inter = read_table(folder / INTERACTIONS.file_name, INTERACTIONS)
    return Dataset.from_raw(
        users.column("user_id").to_numpy(),
        arrow_to_vectors(users.column("profile")),
        items.column("item_id").to_numpy(),
        items.column("category").to_numpy(),
        arrow_to_vectors(items.column("content")),
        int(cats.column("category").to_numpy().max(initial=-1)) + 1,
        inter.column("user_id").to_numpy(),
        inter.column("item_id").to_numpy(),
        inter.column("timestamp").to_numpy(),
    )


def measure(folder: Path, variant: str) -> dict[str, float]:
    """Load ``folder`` with ``variant`` in this process: peak RSS above the baseline, the
    RSS held afterwards and seconds."""
    base = _peak_mib()
    start = time.perf_counter()
    data = load_dataset(folder) if variant == "streamed" else _load_whole(folder)
    seconds = time.perf_counter() - start
    with open("/proc/self/statm") as f:
        held = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    return {
        "peak_above_base_mib": _peak_mib() - base,
        "held_mib": held,
        "seconds": seconds,
        "interactions": float(len(data.inter_ts)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load_memory", description=__doc__)
    p.add_argument("--root", type=Path, required=True, help="store holding the snapshot")
    p.add_argument("--snapshot", default=None, help="snapshot id (default: the only one)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    layout = Layout(a.root)
    snapshot = a.snapshot or next(iter(list_snapshots(layout)), None)
    if snapshot is None:
        p.error(f"no snapshot in {a.root}")
    folder = layout.snapshot_dir(snapshot)
    if a.child:
        sys.stdout.write(json.dumps(measure(folder, a.child)) + "\n")
        return 0
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for _ in range(a.repeats):
        for variant in VARIANTS:  # interleaved: drift on a shared machine hits both
            cmd = [sys.executable, "-m", "bench.load_memory", "--root", str(a.root)]
            cmd += ["--snapshot", snapshot, "--child", variant]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    n = int(med["streamed"]["interactions"])
    lines = [
        f"snapshot {snapshot}: {n:,} interactions, medians of {a.repeats} child processes",
        "",
        "| | " + " | ".join(VARIANTS) + " | ratio |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("peak_above_base_mib", "peak RSS above baseline (MiB)"),
        ("held_mib", "RSS after loading (MiB)"),
        ("seconds", "load (s)"),
    ):
        whole, streamed = med["whole table"][key], med["streamed"][key]
        ratio = f"{streamed / whole:.2f}x" if whole > 0 else "n/a"
        lines.append(f"| {label} | {whole:,.1f} | {streamed:,.1f} | {ratio} |")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``train.world_size`` 1 vs 2 (torch.distributed, gloo) on one stored snapshot: the
model's test Recall@50 and training throughput for several training seeds, so the
difference can be read against the seed-to-seed noise.

    python -m bench.ddp --root STORE [--scale small] [--seeds 0 1 2] [--worlds 1 2]

Each (world size, seed) is one ``core.run_nightly`` on the same snapshot (generated once,
reused by id) with the classical baseline off and the gate open; the figures come from
the published version's ``metrics.json`` and ``training.json``. Prints a markdown table;
``--out FILE`` also writes the raw figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from core import NightlyConfig, run_nightly
from storage import Layout, read_json

__all__ = ["compare_world_sizes", "main", "render"]

log = logging.getLogger(__name__)


def _config(root: Path, scale: str, world: int, seed: int, threads: int | None) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": scale},
            "train": {"world_size": world, "seed": seed},
            "evaluation": {"baseline": "none", "gate_min_lift": 0.0},
            "runtime": {"storage_root": str(root), "resume": False, "threads": threads},
        }
    )


def compare_world_sizes(
    root: Path, scale: str, worlds: list[int], seeds: list[int], threads: int | None
) -> list[dict[str, Any]]:
    """One nightly per (seed, world size), seeds outermost; each run's figures."""
    rows = []
    for seed in seeds:
        for world in worlds:
            log.info("seed %d, world size %d", seed, world)
            version = run_nightly(_config(root, scale, world, seed, threads))
            folder = Layout(root).version_dir(version)
            metrics, training = (
                read_json(folder / "metrics.json"),
                read_json(folder / "training.json"),
            )
            rankers = metrics["rankers"]
            rows.append(
                {
                    "world_size": world,
                    "seed": seed,
                    "version": version,
                    "recall@50": rankers["model"]["recall@50"],
                    "popularity recall@50": rankers["popularity"]["recall@50"],
                    "examples_per_s": training["examples_per_s"],
                    "train_s": sum(training["epoch_seconds"]),
                    "epochs": len(training["epoch_seconds"]),
                }
            )
    return rows


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def render(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per world size (mean ± sd over seeds), then every run."""
    worlds = sorted({r["world_size"] for r in rows})
    by = {w: [r for r in rows if r["world_size"] == w] for w in worlds}
    base = statistics.median(r["examples_per_s"] for r in by[worlds[0]])
    out = [
        "| processes | model Recall@50 (mean ± sd over seeds) | examples/s (median) | "
        f"vs {worlds[0]} | train s (median) |",
        "|---|---|---|---|---|",
    ]
    for w in worlds:
        rate = statistics.median(r["examples_per_s"] for r in by[w])
        out.append(
            f"| {w} | {_mean_sd([r['recall@50'] for r in by[w]])} | {rate:,.0f} | "
            f"{rate / base:.2f}x | {statistics.median(r['train_s'] for r in by[w]):.1f} |"
        )
    out += ["", "| seed | " + " | ".join(f"{w} process(es)" for w in worlds) + " |"]
    out.append("|---|" + "---|" * len(worlds))
    for seed in sorted({r["seed"] for r in rows}):
        cells = [f"{r['recall@50']:.4f}" for w in worlds for r in by[w] if r["seed"] == seed]
        out.append(f"| {seed} | " + " | ".join(cells) + " |")
    pop = rows[0]["popularity recall@50"]
    out += ["", f"Popularity Recall@50: {pop:.4f}. Epochs per run: {rows[0]['epochs']}."]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ddp", description=__doc__)
    p.add_argument("--root", type=Path, required=True, help="store root (snapshot reused)")
    p.add_argument("--scale", default="small", help="synthetic scale (default: small)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=None, help="threads of the parent run")
    p.add_argument("--out", type=Path, help="also write the raw figures as JSON")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = compare_world_sizes(a.root, a.scale, a.worlds, a.seeds, a.threads)
    if a.out is not None:
        a.out.write_text(json.dumps(rows, indent=2))
    sys.stdout.write(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-request serving latency of the linear and hybrid rungs beside an MLP recipe on the
same data:
each is published by a nightly run into a temporary store, loaded with
``Recaller.load``, and asked for every user's top-k, one thread.

    python -m bench.serving_latency --config configs/ml-latest-small.yaml

Prints p50 / p99 of ``Recaller.recall`` over all users (the median of ``--repeats``
rounds per user), the p50 of the users with the largest 5% of bags, and the ratio to the
MLP recipe. The linear user vector sums a bag of up to ``history_len`` item rows, so its
cost grows with what a user holds; the index search grows with the rank.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core import NightlyConfig, Recaller, run_nightly
from core.config import load_config
from core.ladder import HYBRID, HYBRID_TRAIN, LINEAR, LINEAR_TRAIN, WIDE
from storage import Layout, VersionStore

__all__ = ["RECIPES", "main", "measure"]

log = logging.getLogger(__name__)

# (name, tower overrides, train overrides): the linear and hybrid rungs and the '+ wide'
# MLP rung (the hybrid's MLP part).
RECIPES: tuple[tuple[str, dict[str, Any], dict[str, Any]], ...] = (
    ("linear rung", LINEAR, LINEAR_TRAIN),
    ("hybrid rung", HYBRID, HYBRID_TRAIN),
    ("mlp + wide", {"item_bias": True, **WIDE}, {"uniform_negatives": 1024}),
)


def measure(cfg: NightlyConfig, k: int, repeats: int) -> dict[str, float]:
    """Publish ``cfg`` into a temporary store and time ``recall`` for every user:
    p50 / p99 ms, the heaviest 5% of bags' p50 ms and their smallest bag."""
    with tempfile.TemporaryDirectory() as root:
        cfg = cfg.model_copy(update={"runtime": cfg.runtime.model_copy(
            update={"storage_root": root})})  # fmt: skip
        run_nightly(cfg)
        recaller = Recaller.load(VersionStore(Layout(Path(root))))
        users = recaller.tables.user_id
        recent = recaller.tables.recent
        bags = recent.lengths() if recent is not None else np.zeros(len(users), np.int64)
        for u in users[:50]:  # warm-up
            recaller.recall(int(u), k=k)
        took = np.zeros((repeats, len(users)))
        for r in range(repeats):
            for j, u in enumerate(users):
                started = time.perf_counter()
                recaller.recall(int(u), k=k)
                took[r, j] = time.perf_counter() - started
    ms = np.median(took, axis=0) * 1e3
    heavy = bags >= np.quantile(bags, 0.95)
    return {
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "heavy_p50": float(np.median(ms[heavy])),
        "heavy_min_bag": float(bags[heavy].min()),
        "max_bag": float(bags.max()),
        "dim": float(recaller.model.dim),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None, help="a nightly config")
    parser.add_argument("--scale", default=None, help="synthetic scale (no --config)")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the MLP recipe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    base = {"data.scale": args.scale, "runtime.threads": 1}
    rows = {}
    for name, tower, train in RECIPES:
        cfg = load_config(args.config, base)
        if tower.get("kind") != "linear":  # an MLP recipe or part: its epochs
            train = {**train, "epochs": args.epochs}
        cfg = cfg.model_copy(update={"tower": cfg.tower.model_copy(update=tower),
                                     "train": cfg.train.model_copy(update=train)})  # fmt: skip
        rows[name] = measure(NightlyConfig.model_validate(cfg.model_dump()), args.k, args.repeats)
    mlp = rows["mlp + wide"]["p50"]
    out = [
        "| recipe | dims | p50 ms | p99 ms | heaviest 5% of bags: p50 ms (bags of) | p50 / mlp |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in rows.items():
        out.append(
            f"| {name} | {m['dim']:.0f} | {m['p50']:.3f} | {m['p99']:.3f} | "
            f"{m['heavy_p50']:.3f} ({m['heavy_min_bag']:.0f}-{m['max_bag']:.0f} items) | "
            f"{m['p50'] / mlp:.2f}x |"
        )
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

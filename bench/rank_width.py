"""Full-ranking time of inner-product scores on an imported log's validation split: the
fast path (``model.fast_rank.vector_topk``: exact k-NN, then float64 rescoring of each
user's candidates) beside the dense path (``full_ranking_topk`` over a plain score
function), at several vector widths, with random vectors.

    python -m bench.rank_width --config configs/ml-latest-small.yaml

A user's candidates are k + 1 + the items they exclude + a margin, so a log with heavy
users (ml-latest-small: 2,000+ training items for some) makes the rescoring wide; the
fast path groups users by their exclusions so that only the heavy ones pay for it. The
fast path was built for large catalogues (at 1M items a dense score block is 4 MB per
user); on a 10k-item log the dense block is cheap, and this table says by how much.
Prints the median of ``--repeats`` runs per path and the ratio; both paths must return
the same metric.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.config import load_config
from core.dataio import load_prepared
from core.importing import run_import
from model.fast_rank import VectorScores
from model.fullrank import evaluate_ranking
from model.pipeline import score_block_users, validation_sets
from storage import Layout, snapshot_path

__all__ = ["main"]

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="a config that imports a log")
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 1024, 1280])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(args.config, {})
    if cfg.data.importing is None:
        parser.error("the config must import a log (data.source: import)")
    rows = ["| dims | fast path ms | dense path ms | dense / fast | recall@10 (both) |",
            "|---|---|---|---|---|"]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        layout = Layout(Path(tmp))
        folder = snapshot_path(layout, run_import(layout, cfg.data.importing).ref.snapshot_id)
        prep = load_prepared(folder, cfg.data)
        sets = validation_sets(prep, None, 0)
        if sets is None:
            parser.error("the split has no validation part")
        users, relevant, exclude = sets
        n_items = prep.data.n_items
        rng = np.random.default_rng(0)
        for dim in args.dims:
            scores = VectorScores.of(
                rng.standard_normal((prep.data.n_users, dim)).astype(np.float32),
                rng.standard_normal((n_items, dim)).astype(np.float32),
            )

            def dense(rows: np.ndarray, s: VectorScores = scores) -> object:
                return s(rows)  # a plain function: no fast path by type

            figures = []
            block = score_block_users(n_items)
            for fn in (scores, dense):
                took, metric = [], 0.0
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    metric = evaluate_ranking(
                        fn, users, n_items, relevant, exclude, ks=(10,), block_users=block,  # type: ignore[arg-type]
                    )["recall@10"]  # fmt: skip
                    took.append(time.perf_counter() - started)
                figures.append((float(np.median(took)), metric))
            (fast, m_fast), (slow, m_dense) = figures
            rows.append(f"| {dim} | {fast * 1e3:.2f} | {slow * 1e3:.2f} | {slow / fast:.2f}x | "
                        f"{m_fast:.4f} / {m_dense:.4f} |")  # fmt: skip
    sys.stdout.write("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

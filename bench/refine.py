"""IVF-PQ with a refinement stage: what tuning nprobe alone reaches against tuning nprobe
and ``k_factor_rf`` together (``model.ann.tune_index``), on clustered unit vectors.

    python -m bench.refine [--n 50000] [--dim 64] [--factory IVF256,PQ32,RFlat]

Prints a markdown table: the best recall nprobe alone reaches (k_factor_rf = 1) and the
setting the full tuning keeps, with Recall@k vs exact search and single-query latency.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
import numpy.typing as npt

from model.ann import exact_topk, tune_index
from model.index import build_index

__all__ = ["clustered", "main"]


def clustered(n: int, dim: int, clusters: int, seed: int) -> npt.NDArray[np.float32]:
    """`(n, dim)` unit vectors around ``clusters`` Gaussian centres (spread 0.3)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)]
    x += 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.refine", description=__doc__)
    p.add_argument("--n", type=int, default=50_000, help="vectors (default: 50000)")
    p.add_argument("--dim", type=int, default=64, help="dimension (default: 64)")
    p.add_argument("--clusters", type=int, default=256, help="centres (default: 256)")
    p.add_argument("--factory", default="IVF256,PQ32,RFlat", help="(default: %(default)s)")
    p.add_argument("--queries", type=int, default=1000, help="(default: 1000)")
    p.add_argument("--k", type=int, default=100, help="(default: 100)")
    p.add_argument("--target", type=float, default=0.95, help="(default: 0.95)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    vectors = clustered(a.n, a.dim, a.clusters, 0)
    ids = np.arange(a.n, dtype=np.int64)
    queries = clustered(a.queries, a.dim, a.clusters, 1)
    start = time.perf_counter()
    index = build_index(vectors, ids, a.factory)
    build_s = time.perf_counter() - start
    exact = exact_topk(vectors, ids, queries, a.k)
    tuned = tune_index(index, queries, exact, a.k, a.target)
    plain = [t for t in tuned.trials if t.get("k_factor_rf", 1.0) == 1.0]
    top = max(plain, key=lambda t: t["recall"])
    out = [
        f"{a.factory} over {a.n:,} clustered {a.dim}-d vectors, built in {build_s:.1f} s; "
        f"Recall@{a.k} vs exact on {a.queries} queries, target {a.target}:",
        "",
        "| tuning | setting | Recall@k | single query p50 (ms) |",
        "|---|---|---|---|",
        f"| nprobe only (k_factor_rf 1) | nprobe={top['nprobe']:g} | {top['recall']:.4f} | "
        f"{top['p50_ms']:.3f} |",
        f"| every knob | {', '.join(f'{k}={v:g}' for k, v in tuned.params.items())} | "
        f"{tuned.recall:.4f} | {tuned.p50_ms:.3f} |",
        "",
        f"{len(tuned.trials)} settings tried; target {'met' if tuned.met else 'NOT met'}.",
    ]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

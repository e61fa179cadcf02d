"""IVF-PQ with a refinement stage: what tuning nprobe alone reaches against tuning nprobe
and ``k_factor_rf`` together (``model.ann.tune_index``), on clustered unit vectors.

    python -m bench.refine [--n 50000] [--dim 64] [--factory IVF256,PQ32,RFlat]
                           [--train-sample N] [--parts P]

Prints a markdown table: the best recall nprobe alone reaches (k_factor_rf = 1) and the
setting the full tuning keeps, with Recall@k vs exact search and single-query latency;
then how the build went: train / add / merge seconds, the index's size on disk and the
process's peak RSS. With ``--parts P`` the index is built the way the sharded build does
it (``model.index.trained_index``, P copies each filled with a slice, merged by
``model.index_merge.merge_parts``), one part after another in this process.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from model.ann import exact_topk, tune_index
from model.index import fill_index, finish_index, trained_index
from model.index_merge import merge_parts

__all__ = ["clustered", "main"]


def clustered(
    n: int, dim: int, clusters: int, seed: int, chunk: int = 1 << 20
) -> npt.NDArray[np.float32]:
    """`(n, dim)` unit vectors around ``clusters`` Gaussian centres (spread 0.3), made
    ``chunk`` rows at a time (the same vectors as in one go, without float64 temporaries
    of the whole array)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    which = rng.integers(0, clusters, n)
    x = np.empty((n, dim), np.float32)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        part = centres[which[lo:hi]]
        part += 0.3 * rng.standard_normal((hi - lo, dim)).astype(np.float32)
        x[lo:hi] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return x


def _build(
    vectors: npt.NDArray[np.float32], factory: str, train_sample: int | None, parts: int
) -> tuple[faiss.Index, dict[str, float]]:
    """The index and its (train, add, merge) seconds; ``parts`` > 1 fills that many copies
    of the trained template and merges them, as the sharded build does."""
    ids = np.arange(len(vectors), dtype=np.int64)
    t0 = time.perf_counter()
    template = trained_index(vectors, factory, train_sample=train_sample)
    t1 = time.perf_counter()
    if parts <= 1:
        index = template
        fill_index(index, vectors, ids)
        t2 = t3 = time.perf_counter()
    else:
        step = -(-len(vectors) // parts)
        filled = []
        for lo in range(0, len(vectors), step):
            part = faiss.clone_index(template)
            fill_index(part, vectors[lo : lo + step], ids[lo : lo + step])
            filled.append(part)
        t2 = time.perf_counter()
        index = merge_parts(template, filled)
        del filled
        t3 = time.perf_counter()
    finish_index(index)
    return index, {"train": t1 - t0, "add": t2 - t1, "merge": t3 - t2}


def _size_on_disk(index: faiss.Index) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.faiss"
        faiss.write_index(index, str(path))
        return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.refine", description=__doc__)
    p.add_argument("--n", type=int, default=50_000, help="vectors (default: 50000)")
    p.add_argument("--dim", type=int, default=64, help="dimension (default: 64)")
    p.add_argument("--clusters", type=int, default=256, help="centres (default: 256)")
    p.add_argument("--factory", default="IVF256,PQ32,RFlat", help="(default: %(default)s)")
    p.add_argument("--queries", type=int, default=1000, help="(default: 1000)")
    p.add_argument("--k", type=int, default=100, help="(default: 100)")
    p.add_argument("--target", type=float, default=0.95, help="(default: 0.95)")
    p.add_argument(
        "--train-sample", type=int, default=None, help="training rows (default: 256 x nlist)"
    )
    p.add_argument("--parts", type=int, default=1, help="fill P parts and merge (default: 1)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    vectors = clustered(a.n, a.dim, a.clusters, 0)
    ids = np.arange(a.n, dtype=np.int64)
    queries = clustered(a.queries, a.dim, a.clusters, 1)
    index, times = _build(vectors, a.factory, a.train_sample, a.parts)
    build_s = sum(times.values())
    start = time.perf_counter()
    exact = exact_topk(vectors, ids, queries, a.k)
    exact_s = time.perf_counter() - start
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
        "",
        f"Build: train {times['train']:.1f} s (sample {a.train_sample or 'default'}), add "
        f"{times['add']:.1f} s, merge {times['merge']:.1f} s ({a.parts} part(s)); exact "
        f"ground truth {exact_s:.1f} s; index {_size_on_disk(index) / 2**20:,.0f} MiB on "
        f"disk; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB.",
    ]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

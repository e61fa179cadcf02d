"""The library facts the code relies on, measured here: ``python -m bench.facts``.

Each row of the printed table is one claim of docs/performance.md (where the figures of a
run are kept) and the comments that point there. Sizes are modest so the whole run takes
about a minute on 2 cores; the *ratios* are the facts, absolute times vary by machine.

Facts:
  ivf-data      IVF recall depends on the data: clustered vs near-uniform vectors, same
                index and nprobe (model/ann.py tunes on real vectors for this reason).
  hnsw-efc      HNSW efConstruction 40 (faiss's default) vs 160: recall and build time
                (model/index.py ``ef_construction``).
  blas          faiss ``distance_compute_blas_threshold``: a batch of 1,000 exact queries
                at d=64 with the default takes the scalar scan; ``20 * d`` gives BLAS
                (model/index.py ``tune_blas_threshold``).
  flat-single   One exact query over 50k x 64 floats (model/ann.py ``EXACT_MAX_ITEMS``),
                with faiss's threads at every core and at one.
  openmp        torch and faiss each load their own OpenMP runtime: setting one thread
                count leaves the other (bench/measure.py ``set_threads``).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

D = 64
K = 100
Rows = list[tuple[str, str, str]]


def _unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), np.float32)


def clustered(n: int, rng: np.random.Generator, n_clusters: int = 1000) -> npt.NDArray[np.float32]:
    """Unit vectors around ``n_clusters`` random centres (like trained item embeddings of a
    synthetic world with a few categories per centre)."""
    centres = _unit(rng.standard_normal((n_clusters, D), dtype=np.float32))
    noise = rng.standard_normal((n, D), dtype=np.float32) * (0.35 / np.sqrt(D))
    return _unit(centres[rng.integers(0, n_clusters, n)] + noise)


def uniform(n: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Unit vectors spread evenly over the sphere: no structure for IVF to exploit."""
    return _unit(rng.standard_normal((n, D), dtype=np.float32))


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _exact(xb: npt.NDArray[np.float32], xq: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    flat = faiss.IndexFlatIP(D)
    flat.add(xb)
    return flat.search(xq, K)[1]


def _recall(found: npt.NDArray[np.int64], truth: npt.NDArray[np.int64]) -> float:
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def ivf_data(n: int, rng: np.random.Generator) -> Rows:
    """Recall@100 of the same IVF setup on clustered vs near-uniform vectors."""
    nlist, rows = 256, []
    for name, make in (("clustered", clustered), ("near-uniform", uniform)):
        data = make(n + 200, rng)
        xb, xq = data[:n], data[n:]
        truth = _exact(xb, xq)
        index = faiss.index_factory(D, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(xb)
        index.add(xb)
        recalls = []
        for nprobe in (1, 4, 16, 64):
            faiss.extract_index_ivf(index).nprobe = nprobe
            recalls.append(f"{nprobe}: {_recall(index.search(xq, K)[1], truth):.3f}")
        rows.append(
            (
                f"ivf-data ({name})",
                f"IVF{nlist},Flat n={n}",
                "R@100 by nprobe " + ", ".join(recalls),
            )
        )
    return rows


def hnsw_efc(n: int, rng: np.random.Generator) -> Rows:
    """Build time and Recall@100 of HNSW32 built with efConstruction 40 vs 160."""
    data = uniform(n + 200, rng)
    xb, xq = data[:n], data[n:]
    truth = _exact(xb, xq)
    rows = []
    for efc in (40, 160):
        index = faiss.IndexHNSWFlat(D, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = efc
        start = time.perf_counter()
        index.add(xb)
        build = time.perf_counter() - start
        recalls = []
        for ef in (64, 128, 256):
            index.hnsw.efSearch = ef
            recalls.append(f"{ef}: {_recall(index.search(xq, K)[1], truth):.3f}")
        rows.append(
            (
                f"hnsw-efc (efC {efc})",
                f"HNSW32 n={n} near-uniform",
                f"build {build:.1f} s; R@100 by efSearch " + ", ".join(recalls),
            )
        )
    return rows


def blas(n: int, rng: np.random.Generator, repeats: int) -> Rows:
    """One batch of 1,000 exact queries at d=64: default threshold vs ``20 * d``."""
    xb, xq = uniform(n, rng), uniform(1000, rng)
    index = faiss.IndexFlatIP(D)
    index.add(xb)
    default = int(faiss.cvar.distance_compute_blas_threshold)
    rows = []
    try:
        for k in (10, K):
            search = functools.partial(index.search, xq, k)
            faiss.cvar.distance_compute_blas_threshold = default
            scan = _median_s(search, repeats)
            faiss.cvar.distance_compute_blas_threshold = 20 * D
            gemm = _median_s(search, repeats)
            rows.append(
                (
                    f"blas (1,000 queries, k={k})",
                    f"Flat n={n} d={D}, nq*d={1000 * D}",
                    f"threshold {default} (scan): {scan:.2f} s; threshold {20 * D} (BLAS): "
                    f"{gemm:.2f} s; {scan / gemm:.1f}x",
                )
            )
    finally:
        faiss.cvar.distance_compute_blas_threshold = default
    return rows


def flat_single(rng: np.random.Generator, repeats: int) -> Rows:
    """Median latency of one exact query over 50k x 64 floats, with faiss's OpenMP threads
    at every core and at one (a single query is one scan either way)."""
    index = faiss.IndexFlatIP(D)
    index.add(uniform(50_000, rng))
    xq = uniform(repeats, rng)
    threads = int(faiss.omp_get_max_threads())
    medians = {}
    try:
        for t in sorted({os.cpu_count() or 1, 1}, reverse=True):
            faiss.omp_set_num_threads(t)
            times = []
            for i in range(repeats):
                start = time.perf_counter()
                index.search(xq[i : i + 1], K)
                times.append(time.perf_counter() - start)
            medians[t] = statistics.median(times)
    finally:
        faiss.omp_set_num_threads(threads)
    measured = "; ".join(f"{t} thread(s): p50 {m * 1e3:.2f} ms" for t, m in medians.items())
    return [("flat-single", "Flat n=50000 d=64, 1 query, k=100", measured)]


def openmp() -> Rows:
    """The OpenMP libraries mapped into this process, and whether the thread counts of torch
    and faiss follow each other."""
    import torch

    libs = sorted(
        {
            Path(line.split()[-1]).name
            for line in Path("/proc/self/maps").read_text().splitlines()
            if re.search(r"lib(g|i)?omp[^/]*\.so", line.split()[-1])
        }
        if Path("/proc/self/maps").is_file()
        else {"(no /proc/self/maps)"}
    )
    before = (torch.get_num_threads(), int(faiss.omp_get_max_threads()))
    torch.set_num_threads(1)
    after_torch = (torch.get_num_threads(), int(faiss.omp_get_max_threads()))
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(1)
    after_faiss = (torch.get_num_threads(), int(faiss.omp_get_max_threads()))
    faiss.omp_set_num_threads(before[1])
    return [
        ("openmp (runtimes)", "loaded libraries", ", ".join(libs)),
        (
            "openmp (threads)",
            "(torch, faiss) thread counts",
            f"start {before}; torch.set_num_threads(1) -> {after_torch}; "
            f"faiss.omp_set_num_threads(1) -> {after_faiss}",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="vectors of the IVF / BLAS rows")
    parser.add_argument("--hnsw-n", type=int, default=20_000, help="vectors of the HNSW rows")
    parser.add_argument("--repeats", type=int, default=5, help="timings per median")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="faiss / torch threads of the build and batch rows (default 1: on a machine "
        "other jobs share, OpenMP threads wait on each other and swamp the ratios)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    import torch  # loaded before any measurement, as in the pipeline

    print(
        f"faiss {faiss.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
        f"{os.cpu_count()} cores, threads {args.threads}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    start = time.perf_counter()
    rows = openmp()  # first: it reads the default thread counts
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    rows += [
        *ivf_data(args.n, rng),
        *hnsw_efc(args.hnsw_n, rng),
        *blas(args.n, rng, args.repeats),
        *flat_single(rng, 20 * args.repeats),
    ]
    print("| fact | setup | measured |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"({time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()

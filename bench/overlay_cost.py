"""What an index overlay (``model.incremental.Overlay``: tombstones and fresh vectors of
updated items, on indexes that cannot remove) costs a request, next to what a request
with seen items costs, measured side by side in one process.

    python -m bench.overlay_cost [--items 1000000] [--factory IVF1000,Flat] [--rounds 5]
        [--mode auto|selector|overfetch]

Random unit vectors (64 floats) in a ``--factory`` index (IVF: nprobe 8), one thread as
the service searches. Four kinds of request, k = 100, over the same queries: plain (no
filter), with ``--seen`` seen items, with an overlay of ``--tombstones`` tombstones and
``--fresh`` fresh vectors, and both. Each round times ``--queries`` requests of each kind
in turn, the order rotating between rounds; the table has the medians over rounds of each
kind's p50 and p99 and their ratio to plain. ``--mode`` is how filtered requests search
(``core.filtering.FilterMode``; "auto" is what the service does).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import faiss
import numpy as np
import numpy.typing as npt

from core.filtering import EMPTY_IDS, FilteredSearch, FilterMode, ItemCatalogue, ItemFilter
from model.index import build_index

__all__ = ["main", "measure", "render"]

log = logging.getLogger("bench.overlay_cost")

KINDS = ("plain", "seen", "overlay", "overlay + seen")


def measure(
    items: int,
    factory: str,
    rounds: int,
    queries: int,
    seen: int = 40,
    tombstones: int = 300,
    fresh: int = 150,
    dim: int = 64,
    mode: FilterMode = "auto",
) -> dict[str, tuple[float, float]]:
    """Kind -> (p50, p99) ms, medians over ``rounds``."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(items, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(1, items + 1, dtype=np.int64)
    index = build_index(x, ids, factory)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = 8
    faiss.omp_set_num_threads(1)
    tomb = np.sort(rng.choice(ids, tombstones, replace=False))
    live = np.setdiff1d(ids, tomb)
    fresh_ids = np.sort(rng.choice(live, fresh, replace=False))
    fresh_vecs = rng.normal(size=(fresh, dim)).astype(np.float32)
    # Without an overlay every vector of the index is a live item.
    plain_cat = ItemCatalogue(ids, (ids % 100).astype(np.int32))
    over_cat = ItemCatalogue(live, (live % 100).astype(np.int32), tomb, fresh_ids)
    plain = FilteredSearch(index, mode)
    over = FilteredSearch(index, mode, fresh_vecs, fresh_ids)
    history = np.sort(rng.choice(live, seen, replace=False))
    qs = rng.normal(size=(queries, 1, dim)).astype(np.float32)
    cases: dict[str, tuple[ItemCatalogue, FilteredSearch, npt.NDArray[np.int64]]] = {
        "plain": (plain_cat, plain, EMPTY_IDS),
        "seen": (plain_cat, plain, history),
        "overlay": (over_cat, over, EMPTY_IDS),
        "overlay + seen": (over_cat, over, history),
    }

    def timed(
        cat: ItemCatalogue, searcher: FilteredSearch, s: npt.NDArray[np.int64]
    ) -> list[float]:
        out = []
        for q in qs:
            t0 = time.perf_counter()
            flt: ItemFilter | None = cat.filter(s, None, None)
            searcher.search(q, 100, flt)
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    per: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    timed(*cases["plain"])  # warm-up
    for r in range(rounds):
        for kind in KINDS[r % len(KINDS) :] + KINDS[: r % len(KINDS)]:
            ms = timed(*cases[kind])
            per[kind].append((float(np.percentile(ms, 50)), float(np.percentile(ms, 99))))
    med: Callable[[list[float]], float] = statistics.median
    return {k: (med([p for p, _ in v]), med([p for _, p in v])) for k, v in per.items()}


def render(result: dict[str, tuple[float, float]], title: str) -> str:
    b50, b99 = result["plain"]
    rows = [title, "", "| request | p50 ms | p99 ms | p50 / plain | p99 / plain |"]
    rows.append("|---|---|---|---|---|")
    for kind, (p50, p99) in result.items():
        rows.append(f"| {kind} | {p50:.3f} | {p99:.3f} | {p50 / b50:.2f} | {p99 / b99:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overlay_cost", description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--factory", default="IVF1000,Flat")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--seen", type=int, default=40)
    parser.add_argument("--tombstones", type=int, default=300)
    parser.add_argument("--fresh", type=int, default=150)
    parser.add_argument("--mode", choices=("auto", "selector", "overfetch"), default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = measure(
        args.items,
        args.factory,
        args.rounds,
        args.queries,
        args.seen,
        args.tombstones,
        args.fresh,
        mode=args.mode,
    )
    title = (
        f"{args.items:,} items, {args.factory}, k = 100, one thread, {args.mode}; overlay: "
        f"{args.tombstones} tombstones + {args.fresh} fresh; seen: {args.seen} items; "
        f"medians of {args.rounds} rounds of {args.queries} requests"
    )
    log.info("%s", render(result, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

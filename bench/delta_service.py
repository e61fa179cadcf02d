"""Freshness and memory of the in-process path at catalogue scale: a ``RecallService``
serves a fabricated store (``bench.delta_publish.build_store``) while items events are
recorded, published as deltas and applied to the service's live index in place.

Per event: event start -> the service answers from a version holding the new items
(record + delta publish + ``refresh()``, which applies the delta in place), and the
publish and apply parts alone. Resident memory of the process before the events, its
peak during them, and after; the index object is checked to be the one loaded at start
(no reload, no second copy). Single-user recall latency before the events and after them,
side by side: what the overlay (tombstones, fresh vectors) costs a request.

Usage: python -m bench.delta_service [--items 1000000] [--events 100] [--factory Flat]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.delta_publish import _event, build_store
from bench.measure import PeakRss
from core.items import publish_catalogue, record_items
from core.items_validation import ItemsBatch
from service import RecallService

__all__ = ["main", "measure"]

log = logging.getLogger("bench.delta_service")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _retirement(n_items: int, e: int, size: int) -> ItemsBatch:
    """``size`` base items retired (IDs 1..n_items; a fixed seed per event)."""
    rng = np.random.default_rng(5000 + e)
    ids = rng.choice(n_items, size, replace=False) + 1
    return ItemsBatch(event_id=f"bench-{e}", operation="retire", items=ids.tolist())


def _recall_ms(service: RecallService, rounds: int = 400) -> tuple[float, float]:
    """(p50, p99) ms of single-user recall (k=100, seen items excluded) on 1 thread."""
    r = service.recaller
    assert r is not None
    users = r.tables.user_id[:: max(len(r.tables.user_id) // rounds, 1)][:rounds]
    times = []
    for u in users.tolist():
        t0 = time.perf_counter()
        r.recall(u, k=100)
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def measure(
    root: Path, n_items: int, events: int, size: int, factory: str, mix: str = "upsert"
) -> dict[str, Any]:
    """``mix``: "upsert" (each event half new IDs, half new content for held items),
    "create-retire" (events alternate: ``size`` new IDs, then ``size`` retirements), or
    "all" (events alternate: an upsert event as above, then ``size`` retirements)."""
    store = build_store(root, n_items, factory=factory)
    service = RecallService(store, poll_interval_s=3600)
    assert service.refresh()
    first = service.recaller
    assert first is not None
    index = first.index
    rss_before = _rss_mib()
    _recall_ms(service, 50)  # warm-up
    recall_before = _recall_ms(service)
    fresh, publish, apply = [], [], []
    with PeakRss() as peak:
        for e in range(events):
            retire = mix in ("create-retire", "all") and e % 2 == 1
            if retire:
                batch = _retirement(n_items, e, size)
            elif mix == "create-retire":  # new IDs only
                batch = _event(n_items, e, 2 * size)
                batch = batch.model_copy(update={"items": batch.items[:size]})  # type: ignore[index]
            else:
                batch = _event(n_items, e, size)
            first_id = int(batch.items[0] if retire else batch.items[0]["item_id"])  # type: ignore[index]
            t0 = time.perf_counter()
            record_items(str(root), batch)
            publish_catalogue(str(root))
            t1 = time.perf_counter()
            assert service.refresh()
            t2 = time.perf_counter()
            r = service.recaller
            assert r is not None
            pos = int(np.searchsorted(r.tables.item_id, first_id))
            present = pos < len(r.tables.item_id) and r.tables.item_id[pos] == first_id
            assert present != retire, f"event {e}: item {first_id} not applied"
            fresh.append(t2 - t0)
            publish.append(t1 - t0)
            apply.append(t2 - t1)
    served = service.recaller
    assert served is not None
    rss_after = _rss_mib()
    recall_after = _recall_ms(service)

    def p(xs: list[float], q: float) -> float:
        return float(np.percentile(np.asarray(xs), q))

    return {
        "items": n_items,
        "factory": factory,
        "mix": mix,
        "tombstones": len(served.tombstones),
        "fresh": len(served.overlay.fresh_ids),
        "recall_before": recall_before,
        "recall_after": recall_after,
        "events": events,
        "fresh_p50": p(fresh, 50),
        "fresh_p95": p(fresh, 95),
        "publish_p50": p(publish, 50),
        "apply_p50": p(apply, 50),
        "apply_p95": p(apply, 95),
        "rss_before": rss_before,
        "rss_peak": peak.peak_mib,
        "rss_after": rss_after,
        "same_index": served.index is index,
        "deltas_applied": service.status.deltas_applied,
        "index_mib": index.ntotal * index.d * 4 / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delta_service", description=__doc__)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--items-per-event", type=int, default=6)
    parser.add_argument("--factory", default="Flat")
    parser.add_argument("--mix", choices=("upsert", "create-retire", "all"), default="upsert")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("storage", "core", "model", "service"):
        logging.getLogger(name).setLevel(logging.WARNING)
    scratch = Path(tempfile.mkdtemp(prefix="towerflow-delta-service-"))
    try:
        r = measure(
            scratch / "store", args.items, args.events, args.items_per_event, args.factory, args.mix
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("%s", r)
    log.info(
        "| items | index | events (mix) | event -> served p50 | p95 | publish p50 | apply in place "
        "p50 | p95 | RSS before | peak | after | index MiB | same index |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        f"| {r['items']:,} | {r['factory']} | {r['events']} ({r['mix']}) | "
        f"{r['fresh_p50'] * 1e3:.0f} ms | "
        f"{r['fresh_p95'] * 1e3:.0f} ms | {r['publish_p50'] * 1e3:.0f} ms | "
        f"{r['apply_p50'] * 1e3:.0f} ms | {r['apply_p95'] * 1e3:.0f} ms | "
        f"{r['rss_before']:.0f} MiB | {r['rss_peak']:.0f} MiB | {r['rss_after']:.0f} MiB | "
        f"{r['index_mib']:.0f} | {r['same_index']} ({r['tombstones']} tombstones, "
        f"{r['fresh']} fresh) |"
    )
    (b50, b99), (a50, a99) = r["recall_before"], r["recall_after"]
    log.info(
        "| recall k=100 | p50 | p99 |\n|---|---|---|\n"
        f"| before the events | {b50:.3f} ms | {b99:.3f} ms |\n"
        f"| after | {a50:.3f} ms ({a50 / b50:.2f}x) | {a99:.3f} ms ({a99 / b99:.2f}x) |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

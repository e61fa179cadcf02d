"""What an items event costs against the catalogue's size: publishing it as a delta
(``core.delta_publish``) vs folding the chain into one complete version (compaction:
what every event wrote before deltas). Prints a table and the ratios to the smallest
catalogue, all measured in one run.

The store is fabricated, not trained: a random-weight two-tower of the pipeline's shape
(64-dim vectors, 16 content values, an ID table of one row per item) whose vectors fill a
Flat index. A publish's cost does not depend on the weights' values, only on the sizes.

Usage: python -m bench.delta_publish [--sizes 20000,100000,1000000] [--events 30]
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
import pyarrow as pa
import torch

from core.compaction import compact_current
from core.items import publish_catalogue, record_items
from core.items_validation import ItemsBatch
from core.versionio import write_embeddings
from model.config import TowerConfig, TowerSpec
from model.embed import embed_items
from model.features import category_rows
from model.index import build_index
from model.towers import TwoTower
from storage import (
    Layout,
    Lineage,
    VersionFiles,
    VersionStore,
    save_index,
    save_model,
    vectors_to_arrow,
    write_table,
)
from storage.schemas import VERSION_HISTORY, VERSION_ITEMS, VERSION_USERS

__all__ = ["build_store", "main", "measure"]

log = logging.getLogger("bench.delta_publish")

N_USERS, N_CATEGORIES, CONTENT_DIM, PROFILE_DIM = 1000, 100, 16, 8


def build_store(root: Path, n_items: int, seed: int = 0, factory: str = "Flat") -> VersionStore:
    """Publish a complete version of ``n_items`` items (IDs 1..n, a ``factory`` index)
    into a new store."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    spec = TowerSpec(
        tower=TowerConfig(embedding_dim=64, id_dim=32, category_dim=8, hidden=(64,)),
        n_users=N_USERS,
        n_items=n_items,
        n_categories=N_CATEGORIES,
        profile_dim=PROFILE_DIM,
        content_dim=CONTENT_DIM,
    )
    model = TwoTower(spec).eval()
    store = VersionStore(Layout(root))
    vid = store.new_version_id()
    staging = store.begin(vid)
    save_model(staging, model.state_dict(), spec.model_dump(mode="json"))
    item_id = np.arange(1, n_items + 1, dtype=np.int64)
    category = rng.integers(0, N_CATEGORIES, n_items).astype(np.int32)
    content = rng.normal(size=(n_items, CONTENT_DIM)).astype(np.float32)
    table = {"item_id": item_id, "id_row": item_id, "category": category}
    write_table(
        staging / VersionFiles.ITEMS,
        pa.table({**table, "content": vectors_to_arrow(content)}),
        VERSION_ITEMS,
    )
    user_id = np.arange(1, N_USERS + 1, dtype=np.int64)
    profile = rng.normal(size=(N_USERS, PROFILE_DIM)).astype(np.float32)
    write_table(
        staging / VersionFiles.USERS,
        pa.table({"user_id": user_id, "id_row": user_id, "profile": vectors_to_arrow(profile)}),
        VERSION_USERS,
    )
    write_table(
        staging / VersionFiles.HISTORY,
        pa.table({"user_id": user_id[:1], "items": pa.array([[1]], pa.list_(pa.int64()))}),
        VERSION_HISTORY,
    )
    vectors = embed_items(model, item_id, category_rows(category, N_CATEGORIES), content)
    write_embeddings(staging, item_id, vectors)
    save_index(staging / VersionFiles.INDEX, build_index(vectors, item_id, factory, seed=seed))
    store.publish(
        vid,
        expected_current=None,
        config={},
        lineage=Lineage(data_snapshot=None, parent_version=None, catalogue_seq=0),
        embedding_dim=int(vectors.shape[1]),
        metric="inner_product",
        item_count=n_items,
        extra={"index": {"factory": factory, "knob": None, "knob_value": None}},
    )
    return store


def _event(n_items: int, e: int, size: int) -> ItemsBatch:
    """``size`` items: half new IDs, half updates of existing ones (new content)."""
    rng = np.random.default_rng(1000 + e)
    new = [n_items + 1 + e * size + j for j in range(size - size // 2)]
    updated = rng.choice(n_items, size // 2, replace=False) + 1
    return ItemsBatch(
        event_id=f"bench-{e}",
        items=[
            {
                "item_id": int(i),
                "category": int(rng.integers(N_CATEGORIES)),
                "content": [float(v) for v in rng.normal(size=CONTENT_DIM)],
            }
            for i in [*new, *updated.tolist()]
        ],
    )


def _version_bytes(store: VersionStore, version_id: str) -> int:
    path = store.layout.version_dir(version_id)
    return sum(p.stat().st_size for p in path.iterdir())


def measure(root: Path, n_items: int, events: int, size: int) -> dict[str, Any]:
    """Build a store of ``n_items``, publish ``events`` events of ``size`` items, then
    compact; seconds and bytes of each."""
    import core.delta_publish as delta_publish

    t0 = time.perf_counter()
    store = build_store(root, n_items)
    built_s = time.perf_counter() - t0
    base_bytes = _version_bytes(store, str(store.current()))
    publish_s: list[float] = []
    event_s: list[float] = []  # record (acknowledge) + publish
    written: list[int] = []
    for e in range(events):
        if e == 0:
            delta_publish._known.clear()  # the first event: a process that read nothing
        batch = _event(n_items, e, size)
        t_record = time.perf_counter()
        record_items(str(root), batch)
        start = time.perf_counter()
        version = publish_catalogue(str(root))
        publish_s.append(time.perf_counter() - start)
        event_s.append(time.perf_counter() - t_record)
        written.append(_version_bytes(store, version))
    start = time.perf_counter()
    result = compact_current(store.layout)
    compact_s = time.perf_counter() - start
    p50, p95 = np.percentile(np.asarray(publish_s[1:]), [50, 95])
    return {
        "items": n_items,
        "built_s": built_s,
        "base_mib": base_bytes / 2**20,
        "first_s": event_s[0],
        "event_p50_s": float(np.percentile(np.asarray(event_s[1:]), 50)),
        "p50_s": float(p50),
        "p95_s": float(p95),
        "bytes": int(np.median(written)),
        "compact_s": compact_s,
        "compact_mib": _version_bytes(store, result.version_id) / 2**20,
        "folded": result.folded,
    }


def render(rows: list[dict[str, Any]], events: int, size: int) -> str:
    first = rows[0]
    out = [
        f"{events} events of {size} items each (half new, half updates) per catalogue size; "
        "publish = the catalogue entries -> a delta, compare-and-swap included",
        "",
        "| items | version MiB | delta publish p50 | p95 | record + publish p50 | first "
        "event, record + publish (cold) | bytes per event | compaction | compacted MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['items']:,} | {r['base_mib']:.1f} | {r['p50_s'] * 1e3:.1f} ms "
            f"({r['p50_s'] / first['p50_s']:.2f}x) | {r['p95_s'] * 1e3:.1f} ms | "
            f"{r['event_p50_s'] * 1e3:.1f} ms | {r['first_s'] * 1e3:.0f} ms | "
            f"{r['bytes']:,} ({r['bytes'] / first['bytes']:.2f}x) "
            f"| {r['compact_s']:.2f} s ({r['folded']} deltas) | {r['compact_mib']:.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.delta_publish", description=__doc__)
    parser.add_argument("--sizes", default="20000,100000,1000000")
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--items-per-event", type=int, default=6)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("storage", "core", "model"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rows = []
    # Warm-up, discarded: the first publish of a process imports what later ones reuse.
    with tempfile.TemporaryDirectory(prefix="towerflow-delta-bench-") as warm:
        measure(Path(warm) / "store", 1000, 2, args.items_per_event)
    for n in (int(s) for s in args.sizes.split(",")):
        scratch = Path(tempfile.mkdtemp(prefix="towerflow-delta-bench-"))
        try:
            rows.append(measure(scratch / "store", n, args.events, args.items_per_event))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("measured %d items: %s", n, rows[-1])
    log.info("%s", render(rows, args.events, args.items_per_event))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

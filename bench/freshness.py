"""Freshness: seconds from "a merchant listed an item" to "recall can return it".

Three paths over the same trained store, N events each (one new item per event, sent
one after another once the previous one is retrievable):

- served: event emitted to a real `prefect server` on 127.0.0.1 -> trigger ->
  `towerflow serve` runs the new-items flow in a subprocess -> published version ->
  a `RecallService` in this process (polling CURRENT every 0.1 s) serves the item;
- in-process: the new-items flow called here (what `towerflow add-items --now` does),
  against the same server, until the service serves the item;
- core: the flow's steps without Prefect (validate, append, sync), the floor.

Usage: python -m bench.freshness [--root DIR] [--events 20] [--json PATH]
(without --root, a tiny store is trained first: ~1 min).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.live import BIN, LiveServer, live_prefect, served

log = logging.getLogger("bench.freshness")


def _percentiles(seconds: list[float]) -> dict[str, float]:
    arr = np.asarray(seconds)
    return {
        "n": len(arr),
        "p50_s": round(float(np.percentile(arr, 50)), 3),
        "p95_s": round(float(np.percentile(arr, 95)), 3),
        "max_s": round(float(arr.max()), 3),
        "mean_s": round(float(arr.mean()), 3),
    }


def _base(root: Path) -> Path:
    """The folder of CURRENT's complete version (a delta's base holds the tables)."""
    from storage import Layout, VersionStore
    from storage.chains import resolve_chain

    store = VersionStore(Layout(root))
    return resolve_chain(store, store.open_current(verify=False)).base.path


_TABLES: dict[Path, Any] = {}


def _new_item(root: Path, item_id: int, rng: np.random.Generator) -> dict[str, Any]:
    from core.versionio import read_serving_tables

    folder = _base(root)
    if folder not in _TABLES:  # read once per base: a million rows take a second
        _TABLES.clear()
        _TABLES[folder] = read_serving_tables(folder)
    tables = _TABLES[folder]
    c = int(rng.integers(tables.category.max() + 1))
    base = tables.content[rng.choice(np.flatnonzero(tables.category == c))]
    content = base + rng.normal(0, 0.05, base.shape)
    return {"item_id": item_id, "category": c, "content": [float(v) for v in content]}


def _measure(
    name: str,
    root: Path,
    n: int,
    first_id: int,
    send: Callable[[str, dict[str, Any]], None],
    timeout_s: float = 60.0,
) -> list[float]:
    """Latency of each of `n` events: `send(event_id, item)` at t0 until the service in
    this process serves the item."""
    from service import RecallService
    from storage import Layout, VersionStore

    service = RecallService(VersionStore(Layout(root)), poll_interval_s=0.1)
    service.start()
    rng = np.random.default_rng(first_id)
    out = []
    try:
        for i in range(n):
            item = _new_item(root, first_id + i, rng)
            t0 = time.perf_counter()
            send(str(uuid.uuid4()), item)
            while True:
                rec = service.recaller
                ids = rec.tables.item_id if rec is not None else np.empty(0)
                pos = int(np.searchsorted(ids, item["item_id"]))
                if pos < len(ids) and ids[pos] == item["item_id"]:
                    break
                if time.perf_counter() - t0 > timeout_s:
                    raise TimeoutError(
                        f"{name}: item {item['item_id']} not served in {timeout_s} s"
                    )
                time.sleep(0.01)
            out.append(time.perf_counter() - t0)
            log.info("%s event %d: %.2f s", name, i + 1, out[-1])
            time.sleep(0.3)
    finally:
        service.stop()
    return out


def _emitter(server: LiveServer) -> Callable[[str, dict[str, Any]], None]:
    os.environ.update(server.env)  # before Prefect reads its settings
    from cli.items import emit_items_event

    def send(event_id: str, item: dict[str, Any]) -> None:
        # A long-lived producer: the events worker keeps its connection open.
        emit_items_event("create", event_id, {"items": [item]}, flush=False)

    return send


def _in_process(root: Path) -> Callable[[str, dict[str, Any]], None]:
    from flows.new_items import new_items

    def send(event_id: str, item: dict[str, Any]) -> None:
        new_items(event_id=event_id, items=[item], storage_root=str(root))

    return send


def _core(root: Path) -> Callable[[str, dict[str, Any]], None]:
    from core.catalogue_sync import sync_current
    from core.items_validation import validate_upserts
    from model.config import TowerSpec
    from storage import CatalogueLog, Layout, VersionFiles, read_json

    layout = Layout(root)

    def send(event_id: str, item: dict[str, Any]) -> None:
        spec = TowerSpec.model_validate(read_json(_base(root) / VersionFiles.MODEL_CONFIG))
        valid = validate_upserts([item], spec.content_dim, 500)
        CatalogueLog(layout.catalogue_db).append_upserts(event_id, valid.upserts)
        sync_current(layout)

    return send


def _train(root: Path, env: dict[str, str]) -> None:
    log.info("training a tiny store at %s", root)
    subprocess.run(
        [str(BIN / "towerflow"), "run", "--scale", "tiny", "--epochs", "2", "--root", str(root)],
        env=env | {"TOWERFLOW_ROOT": str(root)},
        check=True,
        capture_output=True,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="Trained store (default: new).")
    parser.add_argument("--events", type=int, default=20, help="Events per path (>= 20).")
    parser.add_argument("--json", type=Path, default=Path("bench/results/freshness.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("httpx", "prefect", "storage", "tasks", "service"):
        logging.getLogger(name).setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="towerflow-freshness-"))
    root = (args.root or work / "store").resolve()
    results: dict[str, Any] = {"events_per_path": args.events, "root": str(root)}
    with live_prefect(work / "prefect-home", work / "server.log") as server:
        from core.recall import Recaller  # noqa: F401  (warm imports before timing)

        if args.root is None:
            _train(root, server.env)
        with served(server, root, work / "serve.log"):
            send = _emitter(server)
            results["served"] = _percentiles(_measure("served", root, args.events, 10**8, send))
        results["in_process"] = _percentiles(
            _measure("in-process", root, args.events, 10**8 + 10_000, _in_process(root))
        )
        results["core"] = _percentiles(
            _measure("core", root, args.events, 10**8 + 20_000, _core(root))
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

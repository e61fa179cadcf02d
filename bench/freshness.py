"""Freshness: seconds from "a merchant listed an item" to "`/v1/recall` of a running API
returns it".

Paths over the same trained store, N events each (one new item per event, sent one after
another once the previous one is returned):

- served: event emitted to a real `prefect server` on 127.0.0.1 -> `towerflow serve`
  (`--items-events stream`: its long-lived consumer runs `new-items-batch` in its own
  process; or `trigger`: the deployment's trigger -> a flow run in a new process) ->
  delta published -> the API applies it in place;
- in-process: the new-items flow called here (what `towerflow add-items --now` does);
- core: the flow's steps without Prefect (validate, append, sync), the floor.

The clock stops when `towerflow api` (a child process polling CURRENT every 0.1 s)
returns the item for a query picked before sending: a user and the item's category for
whom the item-tower vector of the new item (computed here, as the publisher will) clears
the 900th score among that category's items, asked with k=1000.

Usage: python -m bench.freshness [--root DIR] [--events 50] [--paths stream,in_process,core]
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.live import BIN, LiveServer, live_prefect, served
from bench.loadgen import api_server

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


@dataclass(frozen=True)
class Probe:
    """A new item and the query that must return it once it is served."""

    item: dict[str, Any]
    body: dict[str, Any]  # the /v1/recall request


def probes(root: Path, n: int, first_id: int, seed: int = 0) -> list[Probe]:
    """``n`` new items (each a typical item of a random category, with noise), each with a
    user whose top k (1000, or the catalogue's size) of that category it enters with room
    to spare: its vector (unknown ID row, as the publisher embeds it) beats the user's
    (0.9 k)th score there."""
    from core.recall import Recaller
    from core.versionio import embed_served_users
    from model.embed import embed_items
    from model.features import category_rows
    from storage import Layout, VersionStore
    from storage.chains import resolve_chain

    rec = Recaller.load(VersionStore(Layout(root)), verify=False)
    t, model = rec.tables, rec.model
    n_cat = model.spec.n_categories
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(len(t.user_id), size=min(2000, len(t.user_id)), replace=False))
    user_vecs = embed_served_users(model, t, users.astype(np.int64))
    # An IVF index finds an item only in the lists a query probes (nprobe as served).
    lists = _ivf(rec.index)
    if lists is not None:
        store = VersionStore(Layout(root))
        base = resolve_chain(store, store.open_current(verify=False)).base
        knob = (base.manifest.extra.get("index") or {}).get("knob_value") or lists.nprobe
        _, probed = lists.quantizer.search(user_vecs, int(knob))
    k = min(1000, len(t.item_id))  # the API's k: at most the catalogue
    rank = k * 9 // 10  # room for the other new items of the run
    out: list[Probe] = []
    # Categories in random order; one a sampled user would not be shown a typical new
    # item of (a cold-start vector can sit below a whole category) is skipped.
    for c in rng.permutation(int(t.category.max()) + 1):
        if len(out) == n:
            break
        rows = np.flatnonzero(t.category == c)
        noise = rng.normal(0, 0.05, t.content.shape[1])
        content = (t.content[rows].mean(axis=0) + noise).astype(np.float32)
        # A new ID: the unknown row, as the publisher embeds it.
        vec = embed_items(model, np.zeros(1, np.int64), category_rows([c], n_cat), content[None])
        cat_vecs = embed_items(
            model, t.item_id_row[rows], category_rows(t.category[rows], n_cat), t.content[rows]
        )
        kth = np.sort(user_vecs @ cat_vecs.T, axis=1)[:, -min(rank, len(rows))]
        margin = user_vecs @ vec[0] - kth
        if lists is not None:  # an IVF index: only users whose probed lists hold it
            _, own = lists.quantizer.search(vec, 1)
            margin[~(probed == own[0, 0]).any(axis=1)] = -np.inf
        best = int(np.argmax(margin))
        if margin[best] <= 0:
            continue
        item = {"item_id": first_id + len(out), "category": int(c), "content": content.tolist()}
        body = {
            "user_id": int(t.user_id[users[best]]),
            "k": k,
            "exclude_seen": False,
            "include_categories": [int(c)],
        }
        out.append(Probe(item, body))
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} categories have a user a new item would reach")
    return out


def _ivf(index: Any) -> Any:
    """The IVF part of ``index`` (under an ID map or a refine wrapper), or None."""
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _measure(
    name: str,
    url: str,
    probes_: list[Probe],
    send: Callable[[str, dict[str, Any]], None],
    timeout_s: float = 60.0,
) -> list[float]:
    """Latency of each probe: ``send(event_id, item)`` at t0 until ``/v1/recall`` of the
    API at ``url`` returns the item for the probe's query."""
    out = []
    with httpx.Client(base_url=url, timeout=10) as http:
        for i, p in enumerate(probes_):
            t0 = time.perf_counter()
            send(str(uuid.uuid4()), p.item)
            while True:
                r = http.post("/v1/recall", json=p.body)
                if r.status_code != 200:
                    raise RuntimeError(f"/v1/recall {p.body}: {r.status_code} {r.text[:300]}")
                if any(x["item_id"] == p.item["item_id"] for x in r.json()["items"]):
                    break
                if time.perf_counter() - t0 > timeout_s:
                    raise TimeoutError(
                        f"{name}: item {p.item['item_id']} not returned in {timeout_s} s"
                    )
                time.sleep(0.02)
            out.append(time.perf_counter() - t0)
            log.info("%s event %d: %.2f s", name, i + 1, out[-1])
            time.sleep(0.3)
    return out


def _emitter(server: LiveServer) -> Callable[[str, dict[str, Any]], None]:
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


def _next_id(root: Path) -> int:
    """An item ID above every ID the catalogue ever held (new items, not updates)."""
    from core.versionio import read_serving_tables
    from storage import Layout
    from storage.backends import open_catalogue

    top = int(read_serving_tables(_base(root)).item_id.max())
    changes = open_catalogue(Layout(root)).changes(0)
    for ids in (changes.upsert_id, changes.retired_id):
        top = max(top, int(ids.max())) if len(ids) else top
    return top + 1


PATHS = ("stream", "trigger", "in_process", "core")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="Trained store (default: new).")
    parser.add_argument("--events", type=int, default=50, help="Events per path.")
    parser.add_argument(
        "--paths", default="stream,in_process,core", help=f"Comma-separated, of {PATHS}."
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/freshness.json"))
    args = parser.parse_args(argv)
    paths = [p for p in args.paths.split(",") if p]
    if not paths or set(paths) - set(PATHS):
        parser.error(f"--paths: choose among {PATHS}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("httpx", "prefect", "storage", "tasks", "service"):
        logging.getLogger(name).setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="towerflow-freshness-"))
    root = (args.root or work / "store").resolve()
    results: dict[str, Any] = {"events_per_path": args.events, "root": str(root)}
    with live_prefect(work / "prefect-home", work / "server.log") as server:
        if args.root is None:
            _train(root, server.env)
        os.environ.update(server.env)  # before Prefect reads its settings
        for k, path in enumerate(paths):
            # New IDs per path, far above the catalogue's.
            todo = probes(root, args.events, _next_id(root), seed=k)
            with api_server(root, threads=1, startup_s=600) as url:
                if path in ("stream", "trigger"):
                    with served(server, root, work / f"serve-{path}.log", items_events=path):
                        latencies = _measure(path, url, todo, _emitter(server))
                elif path == "in_process":
                    latencies = _measure(path, url, todo, _in_process(root))
                else:
                    latencies = _measure(path, url, todo, _core(root))
            results[path] = _percentiles(latencies)
            log.info("%s: %s", path, results[path])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])

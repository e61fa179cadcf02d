"""Sustained stream: a steady flow of items events absorbed while a load generator queries
the API the whole time.

    python -m bench.stream --root STORE [--rate 10] [--minutes 5] [--max-items 100]

Starts a real `prefect server`, `towerflow serve` (its items consumer) and `towerflow api`
on 127.0.0.1 against a copy-free trained store (`--root`, written to: use a copy), then
for ``--minutes`` sends ``--rate`` events/s (open loop: on a fixed schedule, whatever the
consumer does), each of 1..``--max-items`` items (uniform; 80% new IDs, 15% new content
for served items, 5% retire events), while ``--clients`` closed-loop clients POST
`/v1/recall` (known users, k=100). Every 0.25 s it samples which sent events the store
acknowledged and which the API serves (its version's catalogue position), then for
``--drain`` seconds more waits for the backlog to empty.

Prints a table per 30 s window: events and items sent and served, backlog (sent, not yet
served by the API) at the window's end, event sent -> served p50 / p95, API requests,
failures and latency; then the totals. ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.live import live_prefect, served
from bench.loadgen import api_server

log = logging.getLogger("bench.stream")

WINDOW_S = 30.0


@dataclass
class Sent:
    event_id: str
    at: float  # perf_counter when sent
    items: int
    seq: int | None = None  # catalogue position once acknowledged
    acked_at: float | None = None
    served_at: float | None = None


@dataclass
class Load:
    """What the load generator saw: (time, latency s) of good answers, failure times."""

    ok: list[tuple[float, float]] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


def _loadgen(url: str, users: np.ndarray, clients: int, load: Load) -> None:
    async def client(k: int) -> None:
        rng = np.random.default_rng(k)
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
            while not load.stop.is_set():
                body = {"user_id": int(rng.choice(users)), "k": 100}
                t0 = time.perf_counter()
                try:
                    r = await http.post("/v1/recall", json=body)
                    if r.status_code == 200:
                        load.ok.append((t0, time.perf_counter() - t0))
                    else:
                        load.failed.append((t0, f"{r.status_code}: {r.text[:200]}"))
                except httpx.HTTPError as e:
                    load.failed.append((t0, f"{type(e).__name__}: {e}"))

    async def run() -> None:
        await asyncio.gather(*(client(k) for k in range(clients)))

    asyncio.run(run())


class Producer:
    """Events at ``rate``/s on a fixed schedule: 80% creates of new IDs, 15% new content
    for served items, 5% retirements of served items."""

    def __init__(self, root: Path, rate: float, max_items: int, seed: int = 0) -> None:
        from core.versionio import read_serving_tables
        from storage import Layout, VersionStore
        from storage.chains import resolve_chain

        store = VersionStore(Layout(root))
        base = resolve_chain(store, store.open_current(verify=False)).base.path
        t = read_serving_tables(base)
        self.rate, self.max_items = rate, max_items
        self.rng = np.random.default_rng(seed)
        self.served_ids = t.item_id
        self.n_categories = int(t.category.max()) + 1
        self.content_mean = t.content.mean(axis=0)
        self.content_std = t.content.std(axis=0)
        self.next_id = int(t.item_id.max()) + 1_000_000
        self.sent: list[Sent] = []

    def _item(self, item_id: int) -> dict[str, Any]:
        content = self.rng.normal(self.content_mean, self.content_std).astype(np.float32)
        c = int(self.rng.integers(self.n_categories))
        return {"item_id": item_id, "category": c, "content": [float(v) for v in content]}

    def event(self) -> tuple[str, list[Any]]:
        n = int(self.rng.integers(1, self.max_items + 1))
        kind = self.rng.random()
        if kind < 0.05:
            return "retire", [int(i) for i in self.rng.choice(self.served_ids, n, replace=False)]
        if kind < 0.20:
            ids = self.rng.choice(self.served_ids, n, replace=False)
            return "create", [self._item(int(i)) for i in ids]
        first, self.next_id = self.next_id, self.next_id + n
        return "create", [self._item(first + i) for i in range(n)]

    def run(self, seconds: float) -> None:
        from cli.items import emit_items_event

        start = time.perf_counter()
        k = 0
        while (due := start + k / self.rate) < start + seconds:
            time.sleep(max(0.0, due - time.perf_counter()))
            operation, items = self.event()
            event_id = f"stream-{uuid.uuid4()}"
            self.sent.append(Sent(event_id, time.perf_counter(), len(items)))
            emit_items_event(operation, event_id, {"items": items}, flush=False)
            k += 1


def _api_pid(url: str) -> int | None:
    """The pid of the `towerflow api` child serving ``url`` (by its --port argument)."""
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"api" in args and b"--port" in args and port.encode() in args:
            return int(proc.name)
    return None


def _rss_mib(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _monitor(
    root: Path, url: str, producer: Producer, stop: threading.Event, rss: list[tuple[float, float]]
) -> None:
    """Marks sent events acknowledged (catalogue) and served (the API's version includes
    them), every 0.25 s; samples the API's resident memory into ``rss`` (time, MiB)."""
    pid = _api_pid(url)
    from storage import Layout
    from storage.backends import open_catalogue

    catalogue = open_catalogue(Layout(root))
    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.is_set():
            now = time.perf_counter()
            for s in list(producer.sent):
                if s.seq is None:
                    s.seq = catalogue.event_seq(s.event_id)
                    if s.seq is not None:
                        s.acked_at = now
            try:  # the catalogue position the API serves
                served = http.get("/v1/version").json().get("catalogue_seq")
            except (httpx.HTTPError, ValueError):
                served = None
            if served is not None:
                for s in producer.sent:
                    if s.served_at is None and s.seq is not None and s.seq <= served:
                        s.served_at = now
            mib = _rss_mib(pid)
            if mib is not None:
                rss.append((now, mib))
            stop.wait(0.25)


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


def summarize(producer: Producer, load: Load, t0: float, end: float) -> dict[str, Any]:
    rows = []
    n_windows = int(np.ceil((end - t0) / WINDOW_S))
    for w in range(n_windows):
        lo, hi = t0 + w * WINDOW_S, min(t0 + (w + 1) * WINDOW_S, end)
        sent = [s for s in producer.sent if lo <= s.at < hi]
        served_in = [s for s in producer.sent if s.served_at is not None and lo <= s.served_at < hi]
        backlog = sum(
            1 for s in producer.sent if s.at < hi and (s.served_at is None or s.served_at >= hi)
        )
        lat = [s.served_at - s.at for s in sent if s.served_at is not None]
        ok = [d for t, d in load.ok if lo <= t < hi]
        rows.append(
            {
                "window_s": f"{lo - t0:.0f}-{hi - t0:.0f}",
                "events_sent": len(sent),
                "items_sent": sum(s.items for s in sent),
                "events_served": len(served_in),
                "items_served": sum(s.items for s in served_in),
                "backlog_at_end": backlog,
                "sent_to_served_p50_s": _pct(lat, 50),
                "sent_to_served_p95_s": _pct(lat, 95),
                "requests": len(ok),
                "failed_requests": sum(1 for t, _ in load.failed if lo <= t < hi),
                "request_p50_ms": _pct([d * 1e3 for d in ok], 50),
                "request_p99_ms": _pct([d * 1e3 for d in ok], 99),
            }
        )
    lat_all = [s.served_at - s.at for s in producer.sent if s.served_at is not None]
    duration = producer.sent[-1].at - producer.sent[0].at if producer.sent else 0.0
    return {
        "windows": rows,
        "events_sent": len(producer.sent),
        "items_sent": sum(s.items for s in producer.sent),
        "events_served": sum(1 for s in producer.sent if s.served_at is not None),
        "events_per_s_sent": round(len(producer.sent) / duration, 2) if duration else 0.0,
        "items_per_s_sent": round(sum(s.items for s in producer.sent) / duration, 1)
        if duration
        else 0.0,
        "sent_to_served_p50_s": _pct(lat_all, 50),
        "sent_to_served_p95_s": _pct(lat_all, 95),
        "sent_to_served_max_s": round(max(lat_all), 3) if lat_all else float("nan"),
        "requests": len(load.ok),
        "failed_requests": len(load.failed),
        "failures": [f for _, f in load.failed[:10]],
    }


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="A trained store (a copy).")
    parser.add_argument("--rate", type=float, default=10.0, help="Events per second.")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--max-items", type=int, default=100, help="Items per event: 1..N.")
    parser.add_argument("--clients", type=int, default=2, help="Load generator clients.")
    parser.add_argument("--drain", type=float, default=120.0, help="Seconds to let it catch up.")
    parser.add_argument("--json", type=Path, default=Path("bench/results/stream.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("httpx", "prefect"):
        logging.getLogger(name).setLevel(logging.WARNING)
    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="towerflow-stream-"))
    producer = Producer(root, args.rate, args.max_items)
    users = _users(root)
    with live_prefect(work / "prefect-home", work / "server.log") as server:
        os.environ.update(server.env)  # before Prefect reads its settings
        with (
            api_server(root, threads=1, startup_s=600) as url,
            served(server, root, work / "serve.log"),
        ):
            load, stop = Load(), threading.Event()
            rss: list[tuple[float, float]] = []
            threads = [
                threading.Thread(target=_loadgen, args=(url, users, args.clients, load)),
                threading.Thread(target=_monitor, args=(root, url, producer, stop, rss)),
            ]
            for t in threads:
                t.start()
            t0 = time.perf_counter()
            try:
                producer.run(args.minutes * 60)
                sent_end = time.perf_counter()
                deadline = sent_end + args.drain
                while time.perf_counter() < deadline and any(
                    s.served_at is None for s in producer.sent
                ):
                    time.sleep(0.5)
                end = time.perf_counter()
            finally:
                load.stop.set()
                stop.set()
                for t in threads:
                    t.join(60)
        log.info("serve log: %s", work / "serve.log")
    result = summarize(producer, load, t0, end)
    if rss:
        mib = [m for _, m in rss]
        result["api_rss_mib"] = {
            "start": round(mib[0], 1),
            "peak": round(max(mib), 1),
            "end": round(mib[-1], 1),
        }
    result |= {
        "rate": args.rate,
        "minutes": args.minutes,
        "max_items": args.max_items,
        "clients": args.clients,
        "drained_s": round(end - sent_end, 1),
        "root": str(root),
    }
    print(_table(result["windows"]))
    print(json.dumps({k: v for k, v in result.items() if k != "windows"}, indent=2))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _users(root: Path) -> np.ndarray:
    from core.versionio import read_serving_tables
    from storage import Layout, VersionStore
    from storage.chains import resolve_chain

    store = VersionStore(Layout(root))
    base = resolve_chain(store, store.open_current(verify=False)).base.path
    return read_serving_tables(base).user_id[:5000]


if __name__ == "__main__":
    main(sys.argv[1:])

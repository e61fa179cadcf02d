"""What the service's metrics middleware costs per request, measured side by side in one
process: two apps over one served version, metrics on and off, called directly over ASGI.

    python -m bench.metrics_cost --root STORE --requests 100 --blocks 120 --json out.json

Builds both apps with ``service.create_app`` over one ``RecallService`` (so both answer
from the same loaded ``Recaller``) and enters their lifespans. Then, after ``--warmup``
unmeasured requests to each, it runs ``--blocks`` rounds; in each round and for each
endpoint (``POST /v1/recall`` for sampled known users, ``GET /v1/version``), ``--requests``
requests go to one app and then the same requests to the other, the order flipping every
round so drift and warm caches land on both alike. Each request is one call of the ASGI
app (no sockets, no HTTP client), timed with ``time.perf_counter_ns``: what the app itself
spends, where a few µs are not lost in loopback noise.

Prints a markdown table (p50, p99, the median of the per-block means, and on - off as the
median of the paired per-block differences, on / off as the median of their ratios, and
the difference of the p50s, which a stalled block moves least); ``--json`` also writes it.
Nothing is served on a port; the version watcher does not poll during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.loadgen import sample_users

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message

__all__ = [
    "Comparison",
    "Request",
    "Row",
    "call",
    "compare",
    "comparisons",
    "main",
    "markdown",
    "measure",
]

log = logging.getLogger("bench.metrics_cost")

RECALL = "POST /v1/recall"
VERSION = "GET /v1/version"
ON, OFF = "on", "off"
# The version watcher's poll interval during the run: no store reads mid-measurement.
_NO_POLL_S = 3600.0


@dataclass(frozen=True)
class Request:
    """One request as the ASGI app sees it."""

    method: str
    path: str
    body: bytes = b""


@dataclass(frozen=True)
class Row:
    """One endpoint under one setting: latencies in µs of its measured requests."""

    endpoint: str
    setting: str  # ON or OFF
    requests: int
    errors: int  # answers other than 200 (also excluded from the latencies)
    p50_us: float
    p99_us: float
    block_mean_us: float  # median over blocks of each block's mean
    block_means_us: tuple[float, ...]


@dataclass(frozen=True)
class Comparison:
    """Metrics on against off for one endpoint, from the per-block means in µs."""

    endpoint: str
    diff_us: float  # median over blocks of (on mean - off mean) of the same block
    ratio: float  # median over blocks of (on mean / off mean) of the same block
    p50_diff_us: float  # on p50 - off p50 (all blocks pooled): robust to stalls


def _scope(request: Request) -> dict[str, Any]:
    """The HTTP scope an ASGI server would pass for ``request`` (loopback, HTTP/1.1)."""
    headers = [(b"host", b"127.0.0.1"), (b"content-length", str(len(request.body)).encode())]
    if request.body:
        headers.append((b"content-type", b"application/json"))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: ASGIApp, request: Request) -> tuple[int, int]:
    """Send ``request`` to ``app`` over ASGI; returns (status code, nanoseconds from the
    call to the app's return, i.e. until the whole answer was sent)."""
    sent_body = False
    status = 0

    async def receive() -> Message:
        nonlocal sent_body
        if sent_body:  # the body was read: nothing more arrives but the disconnect
            return {"type": "http.disconnect"}
        sent_body = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    scope = _scope(request)
    started = time.perf_counter_ns()
    await app(scope, receive, send)
    return status, time.perf_counter_ns() - started


async def _block(app: ASGIApp, requests: Sequence[Request]) -> tuple[list[int], int]:
    """Send ``requests`` one after another; (ns of each 200 answer, count of others)."""
    ns: list[int] = []
    errors = 0
    for request in requests:
        status, elapsed = await call(app, request)
        if status == 200:
            ns.append(elapsed)
        else:
            errors += 1
    return ns, errors


def _row(endpoint: str, setting: str, blocks: list[list[int]], errors: int) -> Row:
    us = np.concatenate([np.asarray(b, np.float64) for b in blocks]) / 1e3
    if us.size == 0:
        us = np.full(1, np.nan)
    means = tuple(float(np.mean(b)) / 1e3 if b else float("nan") for b in blocks)
    return Row(
        endpoint=endpoint,
        setting=setting,
        requests=sum(len(b) for b in blocks),
        errors=errors,
        p50_us=round(float(np.percentile(us, 50)), 1),
        p99_us=round(float(np.percentile(us, 99)), 1),
        block_mean_us=round(statistics.median(means), 1),
        block_means_us=tuple(round(m, 1) for m in means),
    )


def compare(on: Row, off: Row) -> Comparison:
    """On against off for one endpoint, block by block (blocks of one round pair up)."""
    pairs = list(zip(on.block_means_us, off.block_means_us, strict=True))
    ratios = [a / b for a, b in pairs if b > 0]
    return Comparison(
        endpoint=on.endpoint,
        diff_us=round(statistics.median(a - b for a, b in pairs), 1),
        ratio=round(statistics.median(ratios), 3) if ratios else float("nan"),
        p50_diff_us=round(on.p50_us - off.p50_us, 1),
    )


async def _measure(
    apps: Mapping[str, ASGIApp],
    workloads: dict[str, list[Request]],
    warmup: int,
    blocks: int,
) -> list[Row]:
    """Warm up, then ``blocks`` rounds of every workload on every app (order flipping)."""
    for requests in workloads.values():
        warm = [requests[i % len(requests)] for i in range(warmup)]
        for app in apps.values():
            await _block(app, warm)
    ns: dict[tuple[str, str], list[list[int]]] = {(e, s): [] for e in workloads for s in apps}
    errors = dict.fromkeys(ns, 0)
    settings = list(apps)
    for round_ in range(blocks):
        order = settings if round_ % 2 == 0 else settings[::-1]
        for endpoint, requests in workloads.items():
            for setting in order:
                block_ns, block_errors = await _block(apps[setting], requests)
                ns[endpoint, setting].append(block_ns)
                errors[endpoint, setting] += block_errors
        if (round_ + 1) % max(blocks // 10, 1) == 0 or round_ + 1 == blocks:
            log.info("round %d/%d done", round_ + 1, blocks)
    return [_row(e, s, ns[e, s], errors[e, s]) for (e, s) in ns]


async def _run(
    root: Path, workloads: dict[str, list[Request]], warmup: int, blocks: int, on_loop: bool
) -> list[Row]:
    """Both apps over one service at ``root`` (lifespans entered), then ``_measure``."""
    from service import ApiSettings, RecallService, create_app
    from storage import Layout, VersionStore

    service = RecallService(VersionStore(Layout(root)), poll_interval_s=_NO_POLL_S)
    apps = {
        ON: create_app(service, ApiSettings(metrics=True, recall_on_event_loop=on_loop)),
        OFF: create_app(service, ApiSettings(metrics=False, recall_on_event_loop=on_loop)),
    }
    async with contextlib.AsyncExitStack() as stack:
        # The lifespans load the version (the first start; the second finds it running).
        for app in apps.values():
            await stack.enter_async_context(app.router.lifespan_context(app))
        if service.recaller is None:
            raise RuntimeError(f"no version to serve under {root}: {service.status}")
        return await _measure(apps, workloads, warmup, blocks)


def measure(
    root: Path,
    requests: int,
    blocks: int,
    *,
    warmup: int = 200,
    users: int = 1000,
    k: int = 50,
    seed: int = 0,
    recall_on_event_loop: bool = False,
) -> list[Row]:
    """Rows for both endpoints with metrics on and off over CURRENT of the store at
    ``root``: ``blocks`` rounds of ``requests`` requests per endpoint and setting, after
    ``warmup`` unmeasured ones; recall for ``users`` sampled known users, top ``k``, on
    the thread pool as served by default (``recall_on_event_loop``: on the event loop)."""
    if requests < 1 or blocks < 1 or warmup < 0:
        raise ValueError("requests and blocks must be >= 1, warmup >= 0")
    ids = sample_users(root, users, seed)
    recall = [
        Request("POST", "/v1/recall", json.dumps({"user_id": ids[i % len(ids)], "k": k}).encode())
        for i in range(requests)
    ]
    workloads = {RECALL: recall, VERSION: [Request("GET", "/v1/version")] * requests}
    return asyncio.run(_run(root, workloads, warmup, blocks, recall_on_event_loop))


def comparisons(rows: Sequence[Row]) -> list[Comparison]:
    """On against off for each endpoint present in ``rows``."""
    by = {(r.endpoint, r.setting): r for r in rows}
    endpoints = dict.fromkeys(r.endpoint for r in rows)
    return [compare(by[e, ON], by[e, OFF]) for e in endpoints if (e, ON) in by and (e, OFF) in by]


def markdown(rows: Sequence[Row]) -> str:
    """The result table: one row per endpoint and setting, the on rows carrying on - off
    (µs) and on / off, medians over the paired per-block means, and the difference of the
    p50s (µs)."""
    cmp = {c.endpoint: c for c in comparisons(rows)}
    lines = [
        "| endpoint | metrics | requests | errors | p50 µs | p99 µs | block mean µs (median) "
        "| on - off µs | on / off | p50 on - off µs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = cmp.get(r.endpoint) if r.setting == ON else None
        extra = f"{c.diff_us:.1f} | {c.ratio:.3f} | {c.p50_diff_us:.1f}" if c else " |  | "
        lines.append(
            f"| {r.endpoint} | {r.setting} | {r.requests} | {r.errors} | {r.p50_us:.1f} | "
            f"{r.p99_us:.1f} | {r.block_mean_us:.1f} | {extra} |"
        )
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.metrics_cost", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--root", type=Path, required=True, help="Store root with a CURRENT.")
    # Many short blocks rather than a few long ones: the two blocks of a pair run within
    # ~0.2 s of each other, so a co-tenant's burst rarely lands on one side only (on
    # 2 shared cores, 6 blocks of 2000 put the recall route's difference anywhere in
    # -45..+180 µs from run to run).
    p.add_argument("--requests", type=int, default=100, help="Requests per block.")
    p.add_argument("--blocks", type=int, default=120, help="Rounds (blocks per setting).")
    p.add_argument("--warmup", type=int, default=200, help="Unmeasured requests first.")
    p.add_argument("--users", type=int, default=1000, help="Distinct users sampled.")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch/Faiss threads (as the API).")
    p.add_argument(
        "--recall-on-event-loop",
        action="store_true",
        help="Both apps search on the event loop (ApiSettings.recall_on_event_loop): no "
        "thread hop, whose jitter hides a few µs on the recall route.",
    )
    p.add_argument("--json", type=Path, help="Also write the result as JSON here.")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parse(argv)
    from core.cpus import apply_openmp_defaults

    apply_openmp_defaults()  # before torch and Faiss load, as `towerflow api` does
    from core.threads import set_threads

    set_threads(args.threads)
    rows = measure(
        args.root,
        args.requests,
        args.blocks,
        warmup=args.warmup,
        users=args.users,
        k=args.k,
        seed=args.seed,
        recall_on_event_loop=args.recall_on_event_loop,
    )
    table = markdown(rows)
    sys.stdout.write(table + "\n")
    if args.json:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        result = {
            "config": config,
            "rows": [dataclasses.asdict(r) for r in rows],
            "comparisons": [dataclasses.asdict(c) for c in comparisons(rows)],
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

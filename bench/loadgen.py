"""Load generator for the recall API: latency and throughput over loopback HTTP next to the
same recall in-process, so the table shows what HTTP adds.

    python -m bench.loadgen --root .towerflow --requests 2000 --concurrency 1,8 --json out.json

Starts ``towerflow api`` on a free 127.0.0.1 port against ``--root`` (or uses ``--url``),
warms up, sends ``--requests`` recall requests per concurrency level from that many
concurrent httpx clients (each phase also stops after ``--duration`` seconds), then runs
the same requests through ``Recaller.recall`` in this process, once per filter mode. A
floor row (GET /v1/version) shows what an HTTP round trip costs with no work at all.
Prints a markdown table; ``--json`` also writes it. It always stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

__all__ = ["Phase", "api_server", "main", "run_http", "run_in_process", "sample_users"]

log = logging.getLogger("bench.loadgen")

_FLOOR = "http floor (GET /v1/version)"


@dataclass(frozen=True)
class Phase:
    """One measured row: latencies in ms of the requests that completed in the phase."""

    path: str  # "http" or "in-process (<filter mode>)"
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    rps: float

    @classmethod
    def of(
        cls, path: str, concurrency: int, lat_s: list[float], errors: int, seconds: float
    ) -> Phase:
        ms = np.asarray(lat_s, np.float64) * 1e3 if lat_s else np.full(1, np.nan)
        return cls(
            path=path,
            concurrency=concurrency,
            requests=len(lat_s),
            errors=errors,
            seconds=round(seconds, 3),
            p50_ms=round(float(np.percentile(ms, 50)), 3),
            p99_ms=round(float(np.percentile(ms, 99)), 3),
            rps=round(len(lat_s) / seconds, 1) if seconds > 0 else 0.0,
        )


def _body(user_id: int, args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": user_id, "k": args.k, "exclude_seen": args.exclude_seen}
    if args.include_categories:
        body["include_categories"] = args.include_categories
    if args.exclude_categories:
        body["exclude_categories"] = args.exclude_categories
    return body


async def _http_phase(
    url: str, bodies: Sequence[dict[str, Any] | None], concurrency: int, deadline_s: float
) -> tuple[list[float], int, float]:
    """POST ``bodies`` to /v1/recall (None: GET /v1/version, the floor of an HTTP round
    trip) from ``concurrency`` workers until done or ``deadline_s`` passes.

    Returns (latencies in s of the 200 answers, non-200 or failed count, wall seconds).
    """
    latencies: list[float] = []
    errors = 0
    next_i = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:
        start = time.perf_counter()
        stop_at = start + deadline_s

        async def worker() -> None:
            nonlocal next_i, errors
            while next_i < len(bodies) and time.perf_counter() < stop_at:
                body = bodies[next_i]
                next_i += 1  # one event loop: no lock needed
                t0 = time.perf_counter()
                try:
                    response = await (
                        client.get("/v1/version")
                        if body is None
                        else client.post("/v1/recall", json=body)
                    )
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, errors, time.perf_counter() - start


def run_http(
    url: str,
    warmup: Sequence[dict[str, Any] | None],
    bodies: Sequence[dict[str, Any] | None],
    concurrency: int,
    deadline_s: float,
    path: str = "http",
) -> Phase:
    """Send ``warmup`` unmeasured, then measure ``bodies`` at ``concurrency``."""
    asyncio.run(_http_phase(url, warmup, concurrency, deadline_s))
    lat, errors, seconds = asyncio.run(_http_phase(url, bodies, concurrency, deadline_s))
    return Phase.of(path, concurrency, lat, errors, seconds)


def run_in_process(
    root: Path,
    warmup: Sequence[dict[str, Any]],
    bodies: Sequence[dict[str, Any]],
    deadline_s: float,
    threads: int,
) -> list[Phase]:
    """The same requests through ``Recaller.recall`` (sequential), in every filter mode.

    Modes are interleaved request by request (in rotating order), so machine noise and
    drift land on all of them alike; each row's req/s is its own requests over its own
    summed time. torch and Faiss get ``threads`` threads, as the server does.
    """
    import torch

    from core.recall import FilterMode, Recaller
    from model.index import configure_threads
    from storage import Layout, VersionStore

    torch.set_num_threads(threads)
    configure_threads(threads)
    base = Recaller.load(VersionStore(Layout(root)))
    modes: tuple[FilterMode, ...] = ("auto", "selector", "overfetch")
    recallers = [dataclasses.replace(base, filter_mode=m) for m in modes]

    def call(r: Recaller, body: dict[str, Any]) -> None:
        r.recall(
            body["user_id"],
            None,
            body["k"],
            exclude_seen=body["exclude_seen"],
            include_categories=body.get("include_categories"),
            exclude_categories=body.get("exclude_categories"),
        )

    for body in warmup:
        for r in recallers:
            call(r, body)
    lat: list[list[float]] = [[] for _ in modes]
    start = time.perf_counter()
    for i, body in enumerate(bodies):
        if time.perf_counter() - start > deadline_s:
            break
        for j in range(len(modes)):
            m = (i + j) % len(modes)
            t0 = time.perf_counter()
            call(recallers[m], body)
            lat[m].append(time.perf_counter() - t0)
    return [
        Phase.of(f"in-process ({mode})", 1, lat[m], 0, sum(lat[m])) for m, mode in enumerate(modes)
    ]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def api_server(
    root: Path,
    threads: int,
    startup_s: float,
    *,
    env: dict[str, str] | None = None,
    cpus: set[int] | None = None,
) -> Iterator[str]:
    """``towerflow api`` in a child process on a free loopback port; stopped on exit.
    ``env``: variables added to this process's; ``cpus``: the child's affinity mask (a
    CPU limit the service sizes itself by, as in a container)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "cli", "api", "--root", str(root), "--port", str(port)]
    cmd += ["--threads", str(threads), "--log-level", "warning"]
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, preexec_fn=pin)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"`{' '.join(cmd)}` exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/health", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not healthy after {startup_s} s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def sample_users(root: Path, n: int, seed: int) -> list[int]:
    """``n`` user IDs of CURRENT's users table, seeded (with repeats when fewer)."""
    from storage import Layout, VersionFiles, VersionStore, read_table
    from storage.schemas import VERSION_USERS

    version = VersionStore(Layout(root)).open_current(verify=False)
    ids = read_table(version.file(VersionFiles.USERS), VERSION_USERS).column("user_id")
    all_ids = ids.to_numpy()
    rng = np.random.default_rng(seed)
    return [int(u) for u in rng.choice(all_ids, size=n, replace=n > len(all_ids))]


def markdown(phases: Sequence[Phase], ratios: dict[str, float]) -> str:
    """The result table (and HTTP / in-process ratios) as markdown."""
    lines = [
        "| path | concurrency | requests | errors | p50 ms | p99 ms | req/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {p.path} | {p.concurrency} | {p.requests} | {p.errors} | {p.p50_ms:.3f} | "
        f"{p.p99_ms:.3f} | {p.rps:.1f} |"
        for p in phases
    ]
    lines += ["", *(f"- {name}: {value:.2f}" for name, value in ratios.items())]
    return "\n".join(lines)


def _ratios(phases: Sequence[Phase]) -> dict[str, float]:
    base = next((p for p in phases if p.path == "in-process (auto)"), None)
    if base is None or not base.p50_ms:
        return {}
    out = {}
    for p in phases:
        if p.path == "http":
            out[f"http p50 / in-process p50 (concurrency {p.concurrency})"] = p.p50_ms / base.p50_ms
            out[f"in-process req/s / http req/s (concurrency {p.concurrency})"] = (
                base.rps / p.rps if p.rps else float("nan")
            )
    return out


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="Store root (users, in-process).")
    p.add_argument("--url", help="A running service; default: start `towerflow api` here.")
    p.add_argument("--requests", type=int, default=2000, help="Measured requests per phase.")
    p.add_argument("--warmup", type=int, default=200, help="Unmeasured requests first.")
    p.add_argument("--concurrency", type=ints, default=[1, 8], help="e.g. 1,8")
    p.add_argument("--duration", type=float, default=30.0, help="Max seconds per phase.")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--exclude-seen", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--include-categories", type=ints, default=[])
    p.add_argument("--exclude-categories", type=ints, default=[])
    p.add_argument("--users", type=int, default=1000, help="Distinct users sampled.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch/Faiss threads (both paths).")
    p.add_argument("--startup-timeout", type=float, default=120.0)
    p.add_argument("--no-http", action="store_true", help="In-process phases only.")
    p.add_argument("--json", type=Path, help="Also write the result as JSON here.")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = _parse(argv)
    users = sample_users(args.root, args.users, args.seed)
    bodies = [_body(users[i % len(users)], args) for i in range(args.requests)]
    warm = [_body(users[i % len(users)], args) for i in range(args.warmup)]
    phases: list[Phase] = []
    if not args.no_http:
        with contextlib.ExitStack() as stack:
            url = args.url or stack.enter_context(
                api_server(args.root, args.threads, args.startup_timeout)
            )
            floor = [None] * len(bodies)
            phases.append(run_http(url, floor[: len(warm)], floor, 1, args.duration, _FLOOR))
            for c in args.concurrency:
                log.info("HTTP phase: %d requests at concurrency %d", len(bodies), c)
                phases.append(run_http(url, warm, bodies, c, args.duration))
    # After the server is gone, so the in-process runs have the cores to themselves.
    phases += run_in_process(args.root, warm, bodies, args.duration, args.threads)
    ratios = _ratios(phases)
    table = markdown(phases, ratios)
    sys.stdout.write(table + "\n")
    if args.json:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        result = {"config": config, "phases": [dataclasses.asdict(p) for p in phases]}
        args.json.write_text(json.dumps({**result, "ratios": ratios}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

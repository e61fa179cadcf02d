"""``python -m bench.sizing``: the recall service under a CPU limit, sized as towerflow
sizes it vs sized by the host, at several client concurrencies (issue #20).

    python -m bench.sizing --root .towerflow --cpus 0 --concurrency 1,4,16

The service (``towerflow api``) runs pinned to ``--cpus`` (an affinity mask, what
``docker --cpuset-cpus`` or a Kubernetes static CPU policy gives a pod; the service reads
it through ``core.cpus.cpu_budget`` as it reads a cgroup quota) and the load generator on
the other CPUs, so the client does not take the service's CPU. Each setting is one
server; each concurrency a ``bench.loadgen`` HTTP phase. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.loadgen import Phase, api_server, run_http, sample_users

__all__ = ["SETTINGS", "main"]

log = logging.getLogger("bench.sizing")

# name -> (torch / Faiss threads per search, environment of the server).
SETTINGS: dict[str, tuple[int, dict[str, str]]] = {
    "towerflow default: 1 thread per search, searches at once = CPU budget": (1, {}),
    "1 thread per search, 40 at once (the thread pool's size)": (
        1,
        {"TOWERFLOW_API_RECALL_CONCURRENCY": "40"},
    ),
    "threads = host cores per search, 40 at once": (
        os.cpu_count() or 1,
        {"TOWERFLOW_API_RECALL_CONCURRENCY": "40"},
    ),
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    p = argparse.ArgumentParser(prog="python -m bench.sizing", description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, required=True, help="Store with a published version.")
    p.add_argument("--cpus", type=ints, default=[0], help="The service's CPUs, e.g. 0 or 0,1.")
    p.add_argument("--concurrency", type=ints, default=[1, 4, 16])
    p.add_argument("--requests", type=int, default=1500, help="Measured requests per phase.")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--duration", type=float, default=30.0, help="Max seconds per phase.")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="Also write the rows as JSON here.")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = _parse(argv)
    server_cpus = set(args.cpus)
    others = set(os.sched_getaffinity(0)) - server_cpus
    if others:  # the client on the rest of the machine
        os.sched_setaffinity(0, others)
    users = sample_users(args.root, 1000, args.seed)
    bodies = [{"user_id": users[i % len(users)], "k": args.k} for i in range(args.requests)]
    warm = bodies[: args.warmup]
    rows: list[tuple[str, Phase]] = []
    for name, (threads, env) in SETTINGS.items():
        with api_server(args.root, threads, 120.0, env=env, cpus=server_cpus) as url:
            for c in args.concurrency:
                log.info("%s: concurrency %d", name, c)
                rows.append((name, run_http(url, warm, bodies, c, args.duration)))
    lines = [
        f"Service pinned to CPUs {sorted(server_cpus)}, client on {sorted(others) or 'the same'}; "
        f"k={args.k}, {args.requests} requests per phase.",
        "",
        "| setting | concurrency | p50 ms | p99 ms | req/s | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {p.concurrency} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | {p.rps:.0f} | {p.errors} |"
        for name, p in rows
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    if args.json:
        out = [{"setting": name, **vars(p)} for name, p in rows]
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

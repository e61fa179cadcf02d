"""``python -m bench.threads``: training throughput on quiet and on shared cores, for the
old thread default (every core, OpenMP threads spinning) and the new ones (core.cpus,
core.threads).

Each measurement runs in a fresh interpreter (OpenMP reads its environment at load): the
training step of the pipeline at its hot size (1M-item and 100k-user ID tables with sparse
gradients under SparseAdam, a small MLP per tower under Adam, in-batch softmax, batch
1024), 15 s per run so that the adaptive thread count (model.threadgov) settles. "shared"
starts a co-tenant first: one pure-Python busy loop per core, in separate processes.
Prints a markdown table of examples per second (median of the repeats) and the ratio
shared to quiet.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Annotated, Any

import typer

from bench.shared import cotenant as busy_cotenant
from core.cpus import ADAPTIVE_ENV, OPENMP_DEFAULTS

__all__ = ["SETTINGS", "app", "main", "measure"]

# name -> (environment to set, TOWERFLOW_THREADS or None for the default). "old default":
# every core, fixed, libgomp's default wait (spin ~300k iterations, then sleep). "default":
# what `towerflow` does on a whole machine (spin, count from cpu_budget adapted to the load
# by model.threadgov); "confined default": the same plus OMP_WAIT_POLICY=PASSIVE, what it
# does in a container with a CPU quota or an affinity mask (core.cpus.OPENMP_DEFAULTS).
# The children get these from the environment, whatever this machine's budget.
_NEW = dict(OPENMP_DEFAULTS)
_FIXED = {ADAPTIVE_ENV: "0"}
SETTINGS: dict[str, tuple[dict[str, str], str | None]] = {
    "old default (all cores, fixed, OMP spin)": (_FIXED, str(os.cpu_count() or 1)),
    "default: cpu_budget, adaptive count, OMP spin": ({}, None),
    "confined default: cpu_budget, adaptive count, OMP PASSIVE": (_NEW, None),
    "cpu_budget, fixed, OMP PASSIVE": ({**_NEW, **_FIXED}, None),
    "1 thread, fixed": (_FIXED, "1"),
}
_OMP_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", ADAPTIVE_ENV)


def measure(steps: int, max_seconds: float, items: int, users: int, batch: int) -> dict[str, Any]:
    """Time training steps in this process (threads from core.threads); examples/s."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from core.threads import apply_thread_budget
    from model.threadgov import active, adaptive_loop

    budget = apply_thread_budget(None)
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(0)
    d = 64

    def mlp() -> nn.Sequential:
        return nn.Sequential(nn.Linear(d + 8, 128), nn.ReLU(), nn.Linear(128, d))

    user_ids, item_ids = nn.Embedding(users, d, sparse=True), nn.Embedding(items, d, sparse=True)
    user_mlp, item_mlp = mlp(), mlp()
    sparse = torch.optim.SparseAdam([*user_ids.parameters(), *item_ids.parameters()], lr=0.01)
    dense = torch.optim.Adam([*user_mlp.parameters(), *item_mlp.parameters()], lr=1e-3)
    u_feat, i_feat = torch.randn(users, 8, generator=gen), torch.randn(items, 8, generator=gen)

    def step() -> None:
        u = torch.randint(users, (batch,), generator=gen)
        i = torch.randint(items, (batch,), generator=gen)
        uv = F.normalize(user_mlp(torch.cat([user_ids(u), u_feat[u]], 1)), dim=1)
        iv = F.normalize(item_mlp(torch.cat([item_ids(i), i_feat[i]], 1)), dim=1)
        loss = F.cross_entropy(uv @ iv.T / 0.05, torch.arange(batch))
        sparse.zero_grad()
        dense.zero_grad()
        loss.backward()
        sparse.step()
        dense.step()

    for _ in range(5):  # warm-up: allocator, OpenMP thread pools
        step()
    done, start = 0, time.perf_counter()
    tick = adaptive_loop()  # as model.train's loop does
    while done < steps and time.perf_counter() - start < max_seconds:
        step()
        tick(batch)
        done += 1
    seconds = time.perf_counter() - start
    gov = active()
    return {
        "threads": budget.count,
        "reason": budget.reason,
        "ex_s": done * batch / seconds,
        "threads_at_end": torch.get_num_threads(),
        "switches": gov.switches if gov else 0,
        "probes": gov.probes if gov else 0,
    }


def _run_child(env_extra: dict[str, str], threads: str | None, args: list[str]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in (*_OMP_KEYS, "TOWERFLOW_THREADS")}
    env.update(env_extra)
    if threads is not None:
        env["TOWERFLOW_THREADS"] = threads
    cmd = [sys.executable, "-m", "bench.threads", "--child", *args]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main(
    repeats: Annotated[int, typer.Option(min=1, help="Runs per cell (median).")] = 3,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps per run, at most.")] = 3000,
    max_seconds: Annotated[float, typer.Option(help="Time cap per run.")] = 15.0,
    items: Annotated[int, typer.Option(help="Item ID table rows.")] = 1_000_000,
    users: Annotated[int, typer.Option(help="User ID table rows.")] = 100_000,
    batch: Annotated[int, typer.Option(help="Batch size.")] = 1024,
    cotenant: Annotated[
        int | None, typer.Option(help="Busy processes when shared [default: cores].")
    ] = None,
    child: Annotated[bool, typer.Option(hidden=True)] = False,
) -> None:
    """Print examples/s per setting on quiet and shared cores (median of repeats)."""
    if child:
        typer.echo(json.dumps(measure(steps, max_seconds, items, users, batch)))
        return
    args = [f"--steps={steps}", f"--max-seconds={max_seconds}", f"--items={items}"]
    args += [f"--users={users}", f"--batch={batch}"]
    busy = cotenant or os.cpu_count() or 1
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(repeats):  # repeats outermost: each cell sees the machine's drift
        for load in ("quiet", "shared"):
            with busy_cotenant(busy if load == "shared" else 0):
                for name, (env_extra, threads) in SETTINGS.items():
                    run = _run_child(env_extra, threads, args)
                    results.setdefault((name, load), []).append(run)
    old = statistics.median(r["ex_s"] for r in results[(next(iter(SETTINGS)), "quiet")])
    rows = [
        f"| setting | threads | quiet ex/s | shared ex/s ({busy} busy processes) "
        "| shared / quiet | quiet / old quiet | shared / old quiet | threads at end q / s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in SETTINGS:
        quiet = statistics.median(r["ex_s"] for r in results[(name, "quiet")])
        shared = statistics.median(r["ex_s"] for r in results[(name, "shared")])
        threads = results[(name, "quiet")][0]["threads"]
        ends = "/".join(
            ",".join(str(r["threads_at_end"]) for r in results[(name, load)])
            for load in ("quiet", "shared")
        )
        rows.append(
            f"| {name} | {threads} | {quiet:,.0f} | {shared:,.0f} | {shared / quiet:.2f} "
            f"| {quiet / old:.2f} | {shared / old:.2f} | {ends} |"
        )
    typer.echo("\n".join(rows))


app = typer.Typer(add_completion=False)
app.command()(main)

if __name__ == "__main__":
    app()

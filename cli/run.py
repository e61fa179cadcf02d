"""``towerflow run``: the nightly flow once, in-process (Prefect's temporary server), then
the published version's test metrics. The configuration is checked (``core.precheck``)
before Prefect starts; failures are reported by ``cli.errors``.

Register with ``app.command("run")(run_command)``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.options import (
    JsonOpt,
    RootOpt,
    ScaleOpt,
    ThreadsOpt,
    apply_prefect_defaults,
    fail,
    open_store,
    setup_logging,
)

if TYPE_CHECKING:
    from core.config import DataConfig

__all__ = ["run_command"]


def _data_tag(data: DataConfig) -> str:
    """The run's data tag in the UI: ``scale-small``, ``import`` or ``snapshot``."""
    return f"scale-{data.scale}" if data.source == "synthetic" else data.source


def run_command(
    scale: ScaleOpt = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="YAML/JSON file of nightly parameters (default: none, the built-in "
            "defaults; options given here override the file).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            help="Data generator seed (default: the config's data.seed, else 42).",
            show_default=False,
        ),
    ] = None,
    snapshot: Annotated[
        str | None,
        typer.Option(
            "--snapshot",
            help="Train on this stored data snapshot (the id `towerflow import` prints, or "
            "any under <root>/data/) instead of generating or importing (default: none).",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Training epochs (default: the config's train.epochs, else 5).",
            show_default=False,
        ),
    ] = None,
    world_size: Annotated[
        int | None,
        typer.Option(
            "--world-size",
            help="Training processes (torch.distributed data parallelism on this machine) "
            "(default: the config's train.world_size, else 1).",
            show_default=False,
        ),
    ] = None,
    threads: ThreadsOpt = None,
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--no-resume",
            help="Reuse the training, embedding and evaluation that a failed run finished "
            "for the same snapshot, configuration and code (default: runtime.resume, on).",
            show_default=False,
        ),
    ] = None,
    task_runner: Annotated[
        str | None,
        typer.Option(
            "--task-runner",
            help="'local' (every step in this process) or 'dask' (item embedding, "
            "evaluation and the index build in shards on a Dask cluster) (default: "
            "runtime.task_runner, local).",
            show_default=False,
        ),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(
            "--dask-address",
            help="Scheduler of an existing Dask cluster, e.g. tcp://10.0.0.5:8786; implies "
            "--task-runner dask (default: runtime.dask.address; none = a local cluster).",
            show_default=False,
        ),
    ] = None,
    dask_workers: Annotated[
        int | None,
        typer.Option(
            "--dask-workers",
            min=1,
            help="Worker processes of the local Dask cluster (default: runtime.dask.n_workers, 2).",
            show_default=False,
        ),
    ] = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the nightly flow once, in-process (Prefect's temporary server), and publish."""
    apply_prefect_defaults()
    if os.environ.get("PREFECT_HOME"):
        # Prefect creates its home without parents and then fails to start its server.
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    setup_logging()
    if snapshot is not None and (scale is not None or seed is not None):
        raise fail("--snapshot names stored data: --scale and --seed do not apply", 2)
    from core.config import load_config
    from core.precheck import precheck

    # --root wins over the file's runtime.storage_root (core.store.resolve_root).
    cfg = load_config(
        config,
        {
            "data.scale": scale,
            "data.seed": seed,
            "data.source": "snapshot" if snapshot is not None else None,
            "data.snapshot_id": snapshot,
            "train.epochs": epochs,
            "train.world_size": world_size,
            "runtime.threads": threads,
            "runtime.resume": resume,
            "runtime.storage_root": str(root) if root else None,
            "runtime.task_runner": "dask" if dask_address else task_runner,
            "runtime.dask.address": dask_address,
            "runtime.dask.n_workers": dask_workers,
        },
    )
    # Before Prefect starts (seconds): a bad index factory, device or path fails now, not
    # after training. The flow checks again (deployments do not pass through here).
    precheck(cfg)

    from prefect import tags

    from cli.errors import debug_requested
    from cli.flowlogs import quiet_run_failures
    from cli.progress import progress_bars
    from core.metrics_text import run_summary
    from flows.nightly import nightly
    from storage import VersionFiles, read_json

    start = time.perf_counter()
    # A failing step raises its own exception here (the quality gate's, ...): cli.errors
    # reports it once; Prefect's tracebacks of it stay in the run's logs.
    with (
        tags("towerflow", "nightly", "cli", _data_tag(cfg.data)),
        progress_bars(enabled=not as_json),
        quiet_run_failures(enabled=not debug_requested()),
    ):
        version_id = nightly(cfg)
    seconds = time.perf_counter() - start
    store = open_store(root, cfg.runtime.storage_root)
    metrics = read_json(store.open_version(version_id).file(VersionFiles.METRICS))
    if as_json:
        typer.echo(json.dumps({"version": version_id, "seconds": seconds, "metrics": metrics}))
        return
    typer.echo(run_summary(version_id, seconds, metrics))

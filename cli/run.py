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
from typing import Annotated

import typer

from cli.options import JsonOpt, RootOpt, apply_prefect_defaults, open_store, setup_logging

__all__ = ["run_command"]


def run_command(
    scale: Annotated[
        str | None, typer.Option(help="Synthetic data scale: tiny, small, medium, large.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML/JSON file of nightly parameters.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Data generator seed.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    threads: Annotated[int | None, typer.Option(help="torch / Faiss threads.")] = None,
    root: RootOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the nightly flow once, in-process (Prefect's temporary server), and publish."""
    apply_prefect_defaults()
    if os.environ.get("PREFECT_HOME"):
        # Prefect creates its home without parents and then fails to start its server.
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    setup_logging(verbose=not as_json)
    from core.config import load_config
    from core.precheck import precheck

    # --root wins over the file's runtime.storage_root (core.store.resolve_root).
    cfg = load_config(
        config,
        {
            "data.scale": scale,
            "data.seed": seed,
            "train.epochs": epochs,
            "runtime.threads": threads,
            "runtime.storage_root": str(root) if root else None,
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
        tags("towerflow", "nightly", "cli", f"scale-{cfg.data.scale}"),
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

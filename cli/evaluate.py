"""``towerflow evaluate``: train the configured model (or, with ``--ablation``, the ladder
of variants) on a snapshot and print one full-ranking table next to the baselines.

Nothing is published; no Prefect server is needed. Register with
``app.command("evaluate")(evaluate_command)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from cli.options import root_path

__all__ = ["evaluate_command"]

log = logging.getLogger(__name__)


def evaluate_command(
    ablation: Annotated[
        bool,
        typer.Option(
            "--ablation",
            help="Train the ladder: bce pointwise, in-batch softmax, + logQ, + item bias, "
            "+ mixed negatives, + history (and + hard negatives with --hard).",
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="NightlyConfig YAML/JSON (data, tower, train, ...).")
    ] = None,
    scale: Annotated[str | None, typer.Option(help="Synthetic data scale.")] = None,
    protocol: Annotated[
        str | None, typer.Option(help="Split: temporal, random_ratio or leave_one_out.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum training epochs.")] = None,
    patience: Annotated[
        int | None, typer.Option(help="Early-stopping patience in epochs (validation).")
    ] = None,
    uniform_negatives: Annotated[
        int, typer.Option(help="Mixed negatives per batch in the ladder.")
    ] = 1024,
    history_len: Annotated[int, typer.Option(help="History length in the ladder.")] = 20,
    hard: Annotated[int, typer.Option(help="Hard negatives per example (0 = no rung).")] = 0,
    threads: Annotated[int | None, typer.Option(help="Threads for torch and Faiss.")] = None,
    root: Annotated[
        Path | None,
        typer.Option("--root", help="Store root (default: $TOWERFLOW_ROOT or ./.towerflow)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Also write the markdown table (and .json) here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """Train and rank on a snapshot, print one table with popularity, the classical
    baseline and (synthetic data) the oracle; publish nothing."""
    from cli.progress import progress_bars
    from core.ablation import Variant, ladder, render_table, run_ablation
    from core.config import load_config
    from core.precheck import precheck

    overrides = {
        "data.scale": scale,
        "data.protocol": protocol,
        "train.epochs": epochs,
        "train.early_stopping_patience": patience,
    }
    cfg = load_config(config, overrides)  # a bad value: exit 2 (cli.errors)
    variants = ladder(uniform_negatives, history_len, hard) if ablation else [Variant("model")]
    # --root, else the file's runtime.storage_root, else the env (as `towerflow run`).
    store_root = str(root_path(root, cfg.runtime.storage_root))
    precheck(cfg, store_root)  # before training: device, import files, writable store
    with progress_bars(enabled=not as_json):
        result = run_ablation(cfg, variants, store_root, threads or cfg.runtime.threads)
    table = render_table(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n", encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    typer.echo(json.dumps(result.to_json(), indent=2) if as_json else table)

"""``towerflow evaluate``: train the configured model (or, with ``--ablation``, the ladder
of variants) on a snapshot and print one full-ranking table next to the baselines.

The rung to deploy is chosen on validation (``evaluation.validation_metric``), never on
test: the table marks it and ``--json`` carries it as ``chosen`` (None without a
validation split), with every rung's ``validation`` score under ``runs``.

Nothing is published; no Prefect server is needed. With ``tracking.backend: mlflow`` in
the config, the result is also logged to MLflow
(``core.ablation_tracking.track_ablation``). Register with
``app.command("evaluate")(evaluate_command)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.options import (
    JsonOpt,
    ProtocolOpt,
    RootOpt,
    ScaleOpt,
    SplitSeedOpt,
    ThreadsOpt,
    root_path,
    setup_logging,
)

if TYPE_CHECKING:
    from core.ablation import AblationResult, Variant
    from core.config import NightlyConfig

__all__ = ["evaluate_command"]

log = logging.getLogger(__name__)


def _track(cfg: NightlyConfig, variants: list[Variant], result: AblationResult) -> dict[str, Any]:
    """Log the result to MLflow; where it went, or why it did not (``{"error": ...}``).

    A tracking failure is a warning, not the command's failure: the table, which may have
    taken hours, is still printed and written, and stdout keeps its one JSON object."""
    from core.ablation_tracking import track_ablation

    try:
        run = track_ablation(cfg, variants, result)
    except Exception as e:
        reason = f"{type(e).__name__}: {e}"
        typer.echo(f"warning: not tracked in MLflow: {reason}", err=True)
        return {"error": reason}
    typer.echo(f"tracked in MLflow: parent run {run.run_id} at {run.tracking_uri}", err=True)
    return {"run_id": run.run_id, "experiment_id": run.experiment_id, "uri": run.tracking_uri}


def evaluate_command(
    ablation: Annotated[
        bool,
        typer.Option(
            "--ablation",
            help="Train the ladder: bce pointwise, in-batch softmax, + logQ, + item bias, "
            "+ mixed negatives, + wide, full softmax, + history (and + hard negatives with --hard; "
            "the history rungs sit out random_ratio); the rung with the best validation "
            "metric is marked as chosen.",
        ),
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            help="NightlyConfig YAML/JSON (data, tower, train, ...; default: none, the "
            "built-in defaults).",
            show_default=False,
        ),
    ] = None,
    recipe: Annotated[
        Path | None,
        typer.Option(
            help="Take the tower and train sections from this config file instead (e.g. "
            "towerflow tune's tuned.yaml), keeping --config's data and evaluation "
            "(default: none).",
            show_default=False,
        ),
    ] = None,
    scale: ScaleOpt = None,
    protocol: ProtocolOpt = None,
    split_seed: SplitSeedOpt = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Maximum training epochs (default: the config's train.epochs, else 5).",
            show_default=False,
        ),
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Early-stopping patience in epochs on validation (default: the config's "
            "train.early_stopping_patience, else none: every epoch runs).",
            show_default=False,
        ),
    ] = None,
    uniform_negatives: Annotated[
        int, typer.Option(help="Mixed negatives per batch in the ladder.")
    ] = 1024,
    history_len: Annotated[int, typer.Option(help="History length in the ladder.")] = 20,
    hard: Annotated[int, typer.Option(help="Hard negatives per example (0 = no rung).")] = 0,
    threads: ThreadsOpt = None,
    root: RootOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Also write the markdown table (and .json) here (default: print only).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Train and rank on a snapshot, print one table with popularity, the classical
    baseline and (synthetic data) the oracle, and the variant chosen on validation;
    publish nothing."""
    from cli.progress import progress_bars
    from core.ablation import Variant, ladder, render_table, run_ablation
    from core.config import load_config
    from core.precheck import precheck

    setup_logging()  # -v: a line per trial / rung
    overrides: dict[str, Any] = {
        "data.scale": scale,
        "data.protocol": protocol,
        "data.split_seed": split_seed,
        "train.epochs": epochs,
        "train.early_stopping_patience": patience,
    }
    if recipe is not None:
        # Whole sections: the recipe's tower and train replace the config's.
        tuned = load_config(recipe, {})
        overrides = {
            "tower": tuned.tower.model_dump(mode="json"),
            "train": tuned.train.model_dump(mode="json"),
            **overrides,
        }
    cfg = load_config(config, overrides)  # a bad value: exit 2 (cli.errors)
    variants = ladder(uniform_negatives, history_len, hard) if ablation else [Variant("model")]
    # --root, else the file's runtime.storage_root, else the env (as `towerflow run`).
    store_root = str(root_path(root, cfg.runtime.storage_root))
    precheck(cfg, store_root)  # before training: device, import files, writable store
    with progress_bars(enabled=not as_json):
        result = run_ablation(cfg, variants, store_root, threads or cfg.runtime.threads)
    payload = result.to_json()
    if cfg.tracking.backend == "mlflow":
        payload["tracking"] = _track(cfg, variants, result)
    table = render_table(result)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n", encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    typer.echo(json.dumps(payload, indent=2) if as_json else table)

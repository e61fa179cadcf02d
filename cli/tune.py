"""``towerflow tune``: search the training recipe on validation (Optuna, ``core.tuning``)
within a budget of trials or minutes, then write the tuned config, the trial history
(markdown, JSON, plot) and the test table of the base and tuned recipes.

``towerflow run --config OUT/tuned.yaml`` trains the nightly with the tuned recipe. Nothing
is published; no Prefect server is needed. Register with
``app.command("tune")(tune_command)``.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

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

__all__ = ["tune_command"]

log = logging.getLogger(__name__)


def _raw_config(path: Path | None) -> dict[str, Any]:
    """The base config file's mapping as written (empty without a file); load_config has
    already validated it."""
    if path is None:
        return {}
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


def _kind_overrides(kind: str | None, raw: dict[str, Any]) -> dict[str, Any]:
    """Config overrides for ``--kind``: 'linear' and 'hybrid' take the ablation's rung of
    that kind for every tower and train field the config does not set itself; 'mlp' on a
    linear or hybrid config also drops its bag size (thousands of items as an MLP history
    feature would cost examples x history_len memory), leaving the MLP default, no
    history."""
    if kind is None:
        return {}
    if kind not in ("mlp", "linear", "hybrid"):
        raise typer.BadParameter(
            f"expected 'mlp', 'linear' or 'hybrid', got {kind!r}", param_hint="--kind"
        )
    tower, train = raw.get("tower") or {}, raw.get("train") or {}
    if kind == "mlp":
        if tower.get("kind") in ("linear", "hybrid"):
            return {"tower.kind": "mlp", "tower.history_len": 0}
        return {"tower.kind": "mlp"}
    from core.ladder import HYBRID, HYBRID_TRAIN, LINEAR, LINEAR_TRAIN

    rung, rung_train = (LINEAR, LINEAR_TRAIN) if kind == "linear" else (HYBRID, HYBRID_TRAIN)
    out = {f"tower.{k}": v for k, v in rung.items() if k not in tower or k == "kind"}
    out |= {f"train.{k}": v for k, v in rung_train.items() if k not in train}
    if not tower.get("history_len"):
        out["tower.history_len"] = rung["history_len"]
    return out


def tune_command(
    config: Annotated[
        Path | None,
        typer.Option(
            help="NightlyConfig YAML/JSON to tune (its data, evaluation and base recipe; "
            "default: none, the built-in defaults).",
            show_default=False,
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option(
            help="Stop after this many trials (trial 0 is the config's own recipe; "
            "default: 30, or no limit when --minutes is given).",
            show_default=False,
        ),
    ] = None,
    minutes: Annotated[
        float | None,
        typer.Option(
            help="Stop starting trials after this many minutes (default: no time limit).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search's sampler.")] = 0,
    scale: ScaleOpt = None,
    protocol: ProtocolOpt = None,
    split_seed: SplitSeedOpt = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Maximum epochs per trial; early stopping picks each trial's epoch "
            "(default: the config's train.epochs, else 5).",
            show_default=False,
        ),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            help="Tower kind to tune: 'mlp' (the SGD recipe's rates, sizes, negatives, "
            "dropouts), 'linear' (the closed-form linear tower's rank and penalties, "
            "catalogues up to 20,000 items; trial 0 is then the ablation's linear rung unless "
            "the config sets its own) or 'hybrid' (the same for the linear part of the "
            "ablation's hybrid rung, its MLP part trained once). Default: the config's.",
            show_default=False,
        ),
    ] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--evaluate/--no-evaluate",
            help="After the search, rank the base and tuned models on test beside "
            "popularity and the classical baseline.",
        ),
    ] = True,
    threads: ThreadsOpt = None,
    root: RootOpt = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for tuned.yaml, trials.md/.json/.png and test.md (created; files "
            "in it are replaced)."
        ),
    ] = Path("tune-results"),
    as_json: JsonOpt = False,
) -> None:
    """Tune the training recipe on validation and write the best one as a config."""
    import optuna

    from cli.progress import progress_bars
    from core.config import load_config
    from core.precheck import precheck
    from core.tuning import TuneBudget, run_tuning
    from core.tuning_report import (
        render_test_table,
        render_trials,
        trials_plot,
        tuned_config_yaml,
    )
    from storage import atomic_write_bytes

    setup_logging()  # -v: a line per trial / rung
    budget = TuneBudget(trials if trials is not None or minutes is not None else 30, minutes)
    overrides = {
        "data.scale": scale,
        "data.protocol": protocol,
        "data.split_seed": split_seed,
        "train.epochs": epochs,
    }
    overrides |= _kind_overrides(kind, _raw_config(config))
    cfg = load_config(config, overrides)  # a bad value: exit 2 (cli.errors)
    store_root = str(root_path(root, cfg.runtime.storage_root))
    precheck(cfg, store_root)
    # Optuna's own per-trial INFO lines duplicate ours (core.tuning logs each trial).
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with progress_bars(enabled=not as_json):
        result = run_tuning(
            cfg,
            store_root,
            budget,
            seed=seed,
            threads=threads or cfg.runtime.threads,
            evaluate=evaluate,
        )
    trials_md, test_md = render_trials(result), render_test_table(result)
    best = result.best
    header = (
        f"Tuned by `towerflow tune` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: snapshot "
        f"{result.snapshot_id} ({result.protocol}),\ntrial {best.number} of "
        f"{len(result.trials)} chosen on validation {result.validation_metric} "
        f"{best.validation:.4f} (base recipe: "
        + ("-" if result.base.validation is None else f"{result.base.validation:.4f}")
        + f").\nTrial history: {out / 'trials.md'}."
    )
    raw = _raw_config(config)
    files = {
        "tuned.yaml": tuned_config_yaml(raw, result, header).encode(),
        "trials.md": (trials_md + "\n").encode(),
        "trials.json": (json.dumps(result.to_json(), indent=2) + "\n").encode(),
        "trials.png": trials_plot(result),
    }
    if test_md:
        files["test.md"] = (test_md + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        atomic_write_bytes(out / name, data)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    typer.echo(trials_md)
    if test_md:
        typer.echo("\n" + test_md)
    typer.echo(
        f"\ntuned config: {out / 'tuned.yaml'} (towerflow run --config {out / 'tuned.yaml'})"
    )

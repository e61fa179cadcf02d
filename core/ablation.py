"""The ablation: train a ladder of model variants on one split and rank them, next to
popularity, the classical baseline and (synthetic data) the oracle, in one table.

Every variant reads the same prepared snapshot (same split, vocabulary and features) and
is evaluated by the same full-ranking code as the nightly run (``core.evaluation``), so the
table answers "what does each training ingredient buy" on equal terms.

Which rung to deploy is chosen on validation, never on test: every rung's final model is
scored on the validation split (``EvalConfig.validation_metric`` over the same sampled
validation users for every rung) and the best one is ``AblationResult.chosen``; the test
columns only report what the choice is worth.

``core.ablation_tracking.track_ablation`` logs a finished ablation to MLflow
(``tracking.backend: mlflow``): a parent run and a nested run per rung.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import NightlyConfig
from core.dataio import impression_examples, load_prepared
from core.evaluation import rank_all, reference_scorers
from core.ladder import HISTORY_UNDER_RANDOM, Variant, catalogue_skip, ladder, protocol_skip
from core.progress import Progress
from core.snapshots import ensure_snapshot
from core.threads import apply_threads
from model.config import TowerConfig, TrainConfig
from model.pipeline import (
    Pointwise,
    Prepared,
    ScoreFn,
    fit,
    model_scorer,
    sampled_pointwise,
    validator,
)
from storage import Layout, snapshot_path

__all__ = [
    "HISTORY_UNDER_RANDOM",
    "AblationResult",
    "Variant",
    "VariantRun",
    "choose_rung",
    "ladder",
    "protocol_skip",
    "render_table",
    "run_ablation",
]

log = logging.getLogger(__name__)

# Sampled negatives per positive for the pointwise variant when there are no impressions.
_POINTWISE_NEGATIVES = 4


@dataclass(frozen=True)
class VariantRun:
    """How one variant trained and how its final model scores on validation.

    ``seconds``: training wall time (s). ``val_metric``: the best epoch's validation
    metric seen during training (early stopping only, else None). ``validation``: the
    validation metric of the final model (with early stopping: the best epoch's weights),
    None only when the split has no validation part."""

    name: str
    seconds: float
    epochs: int
    best_epoch: int | None
    val_metric: float | None
    validation: float | None
    epoch_loss: tuple[float, ...] = ()  # mean training loss of each epoch
    blend_share: float | None = None  # kind 'hybrid': the linear share chosen on validation


def choose_rung(runs: list[VariantRun]) -> str | None:
    """The rung with the highest ``validation`` score; on a tie the earlier one (the
    ladder adds one ingredient per rung, so earlier is simpler). None when no rung has a
    validation score (the split has no validation part): picking by test would flatter
    the model, so nothing is picked."""
    best: tuple[float, str] | None = None
    for run in runs:
        # Strictly greater: a later rung must beat the simpler one to be chosen.
        if run.validation is not None and (best is None or run.validation > best[0]):
            best = (run.validation, run.name)
    return None if best is None else best[1]


@dataclass(frozen=True)
class AblationResult:
    """Test metrics of every ranker (variants and references) on the same users, and the
    rung chosen on validation (``validation_metric``, e.g. 'recall@50')."""

    snapshot_id: str
    protocol: str
    n_users: int
    n_items: int
    rankers: dict[str, dict[str, float]]
    runs: list[VariantRun]
    validation_metric: str
    baseline_tuning: dict[str, float] = field(default_factory=dict)
    # Rungs not trained, and why (over the full softmax's limit, a protocol rule).
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def chosen(self) -> str | None:
        """The rung to deploy: best validation score, ties to the earlier rung."""
        # Derived, not stored, so it can never disagree with the runs' scores.
        return choose_rung(self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.snapshot_id,
            "protocol": self.protocol,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "rankers": self.rankers,
            "runs": [vars(r) for r in self.runs],
            "validation_metric": self.validation_metric,
            "chosen": self.chosen,
            "baseline_tuning": self.baseline_tuning,
            "skipped": self.skipped,
        }


def _pointwise(prep: Prepared, folder: Path, seed: int) -> Pointwise:
    """Labelled impressions when the snapshot has them and the split has a time cut,
    else sampled negatives."""
    if (folder / "impressions.parquet").is_file() and prep.split.t_val is not None:
        return impression_examples(folder, prep)
    log.info("no impressions for this split: pointwise variant uses sampled negatives")
    return sampled_pointwise(prep, _POINTWISE_NEGATIVES, seed)


def _epoch_fraction(progress: Progress) -> Callable[[int, int, int], None]:
    """``on_step`` callback reporting epochs done (fractional) to ``progress``."""

    def on_step(epoch: int, step: int, steps: int) -> None:
        progress.update(epoch - 1 + step / max(steps, 1))

    return on_step


def run_ablation(
    cfg: NightlyConfig, variants: list[Variant], root: str, threads: int | None = None
) -> AblationResult:
    """Prepare ``cfg``'s snapshot under ``root``, train every variant, rank all of them."""
    apply_threads(threads)
    snapshot = ensure_snapshot(root, cfg.data)
    folder = snapshot_path(Layout(Path(root)), snapshot.snapshot_id)
    prep = load_prepared(folder, cfg.data)
    metric = cfg.evaluation.validation_metric
    # One validator for every rung (the base seed), so all rungs are scored on the same
    # sampled validation users; None when the split has no validation part.
    validate = validator(prep, metric, cfg.evaluation.validation_users, cfg.train.seed)
    scorers: dict[str, ScoreFn] = {}
    runs: list[VariantRun] = []
    skipped: dict[str, str] = {}
    for variant in variants:
        tower: TowerConfig = cfg.tower.model_copy(update=variant.tower)
        train: TrainConfig = cfg.train.model_copy(update=variant.train)
        reason = protocol_skip(variant, prep.split.protocol) or catalogue_skip(
            tower, train, prep.vocab.n_items
        )
        if reason is not None:
            log.info("skipping %r: %s", variant.name, reason)
            skipped[variant.name] = reason
            continue
        pointwise = _pointwise(prep, folder, train.seed) if train.loss == "bce" else None
        log.info("training variant %r", variant.name)
        # A bar per variant in `towerflow evaluate` (cli.progress), a log line elsewhere.
        progress = Progress(
            f"{variant.name}-progress", variant.name, total=train.epochs, unit="epochs"
        )
        start = time.perf_counter()
        model, result = fit(
            prep,
            tower,
            train,
            validate_metric=metric,
            validate_users=cfg.evaluation.validation_users,
            pointwise=pointwise,
            on_step=_epoch_fraction(progress),
        )
        progress.update(train.epochs, force=True)
        seconds = time.perf_counter() - start
        best = result.best_epoch
        # The final model (with early stopping fit restored the best epoch's weights).
        validation = None if validate is None else validate(model)
        if validation is not None:
            log.info("variant %r: validation %s %.4f", variant.name, metric, validation)
        runs.append(
            VariantRun(
                variant.name,
                seconds,
                len(result.epochs),
                best,
                None if best is None else result.epochs[best - 1].val_metric,
                validation,
                tuple(e.loss for e in result.epochs),
                result.blend_share,
            )
        )
        scorers[variant.name] = model_scorer(model, prep, ~prep.split.test)
    tuning: dict[str, float] = {}
    scorers |= reference_scorers(prep, folder, cfg.evaluation, tuning)
    n_users, rankers, _ = rank_all(prep, scorers, cfg.evaluation)
    return AblationResult(
        snapshot.snapshot_id,
        prep.split.protocol,
        n_users,
        prep.data.n_items,
        rankers,
        runs,
        metric,
        tuning,
        skipped,
    )


_COLUMNS = (
    "recall@10",
    "recall@50",
    "ndcg@10",
    "ndcg@50",
    "mrr@10",
    "precision@10",
    "hit_rate@50",
    "coverage@50",
    "avg_pop_norm@50",
)
# Test metrics quoted for the chosen rung below the table.
_LABELS = {"recall@10": "Recall@10", "ndcg@10": "NDCG@10"}


def render_table(res: AblationResult) -> str:
    """Markdown: one row per ranker (variants first, then references), the test metrics,
    the share of the oracle's Recall@50 (synthetic data), each rung's validation metric,
    the rung chosen on it (✓), training time (s) and epochs; then a line naming the
    choice and its test metrics."""
    runs = {r.name: r for r in res.runs}
    chosen = res.chosen
    oracle = res.rankers.get("oracle", {}).get("recall@50")
    cols = [c for c in _COLUMNS if c in next(iter(res.rankers.values()))]
    head = ["ranker", *cols, *(["of oracle R@50"] if oracle else [])]
    head += [f"validation {res.validation_metric}", "chosen", "train s", "epochs"]
    lines = [
        f"Protocol `{res.protocol}`, snapshot `{res.snapshot_id}`: {res.n_users:,} test users, "
        f"full ranking over {res.n_items:,} items (train + validation items masked).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, metrics in res.rankers.items():
        run = runs.get(name)
        cells = [name, *(f"{metrics[c]:.4f}" for c in cols)]
        if oracle:
            cells.append(f"{metrics['recall@50'] / oracle:.1%}")
        if run is None:
            cells += ["", "", "", ""]
        else:
            best = "" if run.best_epoch is None else f" (best {run.best_epoch})"
            val = "" if run.validation is None else f"{run.validation:.4f}"
            mark = "✓" if name == chosen else ""
            cells += [val, mark, f"{run.seconds:.0f}", f"{run.epochs}{best}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", _choice_line(res)]
    lines += [
        f"Blend of `{r.name}` chosen on validation: the linear part's share {r.blend_share:g}."
        for r in res.runs
        if r.blend_share is not None
    ]
    lines += [f"Not trained: `{name}`, {why}." for name, why in res.skipped.items()]
    if res.baseline_tuning:
        tried = ", ".join(f"{k}: {v:.4f}" for k, v in res.baseline_tuning.items())
        lines += ["", f"Classical baseline regularisation chosen on validation ({tried})."]
    return "\n".join(lines)


def _choice_line(res: AblationResult) -> str:
    """The rung chosen on validation with its test metrics, and (for reference only) the
    rung the test set would have picked, by the same metric as validation."""
    chosen = res.chosen
    if chosen is None:
        return "No validation split: no rung chosen (choosing by test would flatter the model)."
    run = next(r for r in res.runs if r.name == chosen)
    test = res.rankers[chosen]
    shown = ", ".join(f"{_LABELS[k]} {test[k]:.4f}" for k in _LABELS if k in test)
    line = (
        f"Chosen on validation ({res.validation_metric} = {run.validation:.4f}): "
        f"`{chosen}`; its test {shown}"
    )
    # Compare by test on the validation metric when the test has it, else Recall@10.
    key = res.validation_metric if res.validation_metric in test else "recall@10"
    rungs = [r.name for r in res.runs if key in res.rankers[r.name]]
    if len(rungs) < 2:
        return line + "."
    # max keeps the first of equals: the earlier rung, as the validation tie rule.
    by_test = max(rungs, key=lambda name: res.rankers[name][key])
    if by_test == chosen:
        return line + f" (also the best rung by test {key}: shown for reference, not a choice)."
    return line + (
        f" (the best rung by test {key} would be `{by_test}`: shown for reference only, "
        "not a choice)."
    )

"""Experiment tracking of an ablation (``tracking.backend: mlflow``): a parent run with
the base config, the reference rankers and the table, and a nested run per rung with its
config overrides and its test and validation metrics (``track_ablation``)."""

from __future__ import annotations

import logging

from core.ablation import AblationResult, Variant, render_table
from core.config import NightlyConfig
from core.progress import StepLogger
from core.tracking import (
    KIND,
    NIGHTLY_SECTIONS,
    SNAPSHOT,
    Point,
    TrackedRun,
    Tracker,
    config_params,
    metric_key,
    ranker_points,
)

__all__ = ["track_ablation"]

log = logging.getLogger(__name__)


def _rung_points(res: AblationResult, name: str) -> list[Point]:
    """A rung's test metrics under ``model/`` (keyed as a nightly's model, so the two
    compare key for key), its final model's validation metric under ``validation/`` (what
    the rung was chosen on) and its training: seconds, epochs, loss per epoch (step =
    epoch), best epoch and its validation metric."""
    points = ranker_points({"model": res.rankers[name]})
    run = next((r for r in res.runs if r.name == name), None)
    if run is None:
        return points
    if run.validation is not None:
        points.append(Point(metric_key("validation", res.validation_metric), run.validation))
    points += [Point("train/seconds", run.seconds), Point("train/epochs", run.epochs)]
    points += [Point("train/loss", v, i) for i, v in enumerate(run.epoch_loss, 1)]
    if run.best_epoch is not None:
        points.append(Point("train/best_epoch", run.best_epoch))
    if run.val_metric is not None:
        points.append(Point("train/best_validation", run.val_metric))
    return points


def track_ablation(
    cfg: NightlyConfig,
    variants: list[Variant],
    res: AblationResult,
    *,
    run_name: str | None = None,
    logger: StepLogger = log,
) -> TrackedRun:
    """Log a finished ablation to ``cfg.tracking``'s MLflow experiment: a parent run
    (the base config as parameters, the reference rankers' metrics, the table as
    ablation.md and ablation.json, the rung chosen on validation as tag ``chosen``) and a
    nested run per rung, named after it (its config overrides as parameters, its test and
    validation metrics). Returns the parent run.

    Logged after the last rung has trained, so the runs' MLflow start times are the
    tracking time; each rung's training time is its ``train/seconds`` metric."""
    tracker = Tracker.open(cfg.tracking)
    names = [v.name for v in variants]
    references = {k: v for k, v in res.rankers.items() if k not in names}
    tags = {KIND: "ablation", SNAPSHOT: res.snapshot_id, "protocol": res.protocol}
    if res.chosen is not None:  # no tag at all without a validation split: nothing chosen
        tags |= {"chosen": res.chosen, "chosen_on": f"validation {res.validation_metric}"}
    with tracker.run(run_name or f"ablation-{res.snapshot_id}", tags) as parent:
        # The index section plays no part in an ablation.
        params = config_params(cfg.model_dump(mode="json"), NIGHTLY_SECTIONS[:4])
        params["ladder"] = " | ".join(names)
        points = ranker_points(references)
        points += [Point("eval/n_users", res.n_users), Point("eval/n_items", res.n_items)]
        points += [
            Point(metric_key("baseline_tuning", k), v) for k, v in res.baseline_tuning.items()
        ]
        tracker.log(parent, params, points)
        tracker.client.log_text(parent, render_table(res), "ablation.md")
        tracker.client.log_dict(parent, res.to_json(), "ablation.json")
        # A rung run_ablation skipped (full softmax on a large catalogue) has no results.
        trained = [v for v in variants if v.name in res.rankers]
        for rung, variant in enumerate(trained):
            # mlflow.parentRunId is what nests a run under another in MLflow's UI.
            child_tags = {"mlflow.parentRunId": parent, KIND: "ablation-rung", "rung": str(rung)}
            with tracker.run(variant.name, {**child_tags, SNAPSHOT: res.snapshot_id}) as child:
                overrides = {"tower": variant.tower, "train": variant.train}
                params = config_params(overrides, ("tower", "train"))
                tracker.log(child, params, _rung_points(res, variant.name))
    logger.info("tracked the ablation in MLflow: parent run %s, %d rungs", parent, len(trained))
    return tracker.tracked(parent)

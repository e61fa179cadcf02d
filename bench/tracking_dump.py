"""What an MLflow tracking store holds after towerflow's runs, as markdown (docs/tracking.md).

    python -m bench.tracking_dump --uri file:///tmp/tf-mlflow/mlruns --demo /tmp/tf-store

``--demo ROOT`` first fills the store the way production does, on the tiny synthetic
scale: two nightly versions published into ROOT and tracked (train seeds 0 and 1), one
nightly that fails its quality gate (tracked FAILED), and one ablation over the standard
ladder (a parent run, a nested run per rung). Without it, the store at ``--uri`` is only
read. The listing: one row per run (kind, status, parent, sizes, headline metrics), then
the metric keys of one nightly run by group, its parameters and its artifacts.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.ablation import ladder, run_ablation
from core.ablation_tracking import track_ablation
from core.config import NightlyConfig
from core.evaluation import QualityGateError
from core.nightly import run_nightly
from core.tracking import track_failure

__all__ = ["dump", "fill_demo", "main"]

log = logging.getLogger(__name__)

# Metrics shown per run in the table (absent ones print as '-').
_HEADLINE = ("model/recall_at_50", "popularity/recall_at_50", "train/seconds", "index/recall")


def _config(root: Path, uri: str, experiment: str, seed: int, **evaluation: Any) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 4, "seed": seed},
            "evaluation": evaluation,
            "runtime": {"storage_root": str(root)},
            "tracking": {"backend": "mlflow", "uri": uri, "experiment": experiment},
        }
    )


def fill_demo(root: Path, uri: str, experiment: str) -> None:
    """Two tracked nightlies, one tracked failed nightly and one tracked ablation (the
    Python API's ``run_nightly`` tracks what it publishes; a failure is tracked here, as
    the flow's ``track_failures`` does)."""
    for seed in (0, 1):
        cfg = _config(root, uri, experiment, seed)
        run_nightly(cfg)  # tracks the published version itself (MLflow run = version id)
    failing = _config(root, uri, experiment, 0, gate_min_lift=100.0)
    try:
        run_nightly(failing)
    except QualityGateError as e:
        track_failure(failing, e, run_name="nightly-tiny-gate-lift-100")
    cfg = _config(root, uri, experiment, 0)
    variants = ladder(uniform_negatives=128, history_len=8)
    result = run_ablation(cfg, variants, str(root))
    track_ablation(cfg, variants, result, run_name="ablation-tiny")


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"


def dump(uri: str, experiment: str) -> str:
    """The markdown listing of experiment ``experiment`` at ``uri``."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return f"No experiment {experiment!r} at {uri}."
    runs = client.search_runs(
        [exp.experiment_id], run_view_type=ViewType.ALL, order_by=["attributes.start_time ASC"]
    )
    names = {r.info.run_id: r.info.run_name for r in runs}
    head = ["run name", "kind", "status", "parent", "params", "metrics", "artifacts", *_HEADLINE]
    lines = [
        f"Experiment `{experiment}`: {len(runs)} runs.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        parent = names.get(tags.get("mlflow.parentRunId", ""), "")
        artifacts = len(client.list_artifacts(r.info.run_id))
        cells = [
            str(r.info.run_name),
            tags.get("kind", "?"),
            str(r.info.status),
            parent,
            str(len(r.data.params)),
            str(len(metrics)),
            str(artifacts),
            *(_fmt(metrics.get(k)) for k in _HEADLINE),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    failed = [r for r in runs if "failure" in r.data.tags]
    if failed:
        lines += ["", "Failed runs:", ""]
        lines += [f"- `{r.info.run_name}`: {r.data.tags['failure']}" for r in failed]
    nightly = [r for r in runs if r.data.tags.get("kind") == "nightly" and r.data.metrics]
    if nightly:
        lines += ["", *_one_run(client, nightly[0])]
    return "\n".join(lines)


def _one_run(client: Any, run: Any) -> list[str]:
    """Metric keys by group, parameters and artifacts of one nightly run."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in sorted(run.data.metrics):
        group, _, name = key.rpartition("/")
        groups[group or "(top)"].append(name)
    tags = run.data.tags
    lines = [
        f"Nightly run `{run.info.run_name}` (version `{tags.get('version_id')}`, snapshot "
        f"`{tags.get('snapshot_id')}`), metric keys by group:",
        "",
    ]
    lines += [f"- `{g}/`: {', '.join(names)}" for g, names in sorted(groups.items())]
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    steps = ", ".join(f"{m.step}: {m.value:.4f}" for m in sorted(loss, key=lambda m: m.step))
    lines += ["", f"`train/loss` by step (epoch): {steps}", "", "Parameters by section:", ""]
    sections: dict[str, list[str]] = defaultdict(list)
    for key, value in sorted(run.data.params.items()):
        section, _, name = key.partition(".")
        sections[section].append(f"{name}={value}")
    lines += [f"- `{s}`: {', '.join(v)}" for s, v in sections.items()]
    shown = sorted(t for t in tags if not t.startswith("mlflow."))
    lines += ["", "Tags: " + ", ".join(f"`{t}` = `{tags[t]}`" for t in shown)]
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    lines += ["", "Artifacts: " + ", ".join(f"`{a}`" for a in artifacts)]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.tracking_dump", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--uri", required=True, help="MLflow tracking URI (file:///..., http://...)")
    p.add_argument("--experiment", default="towerflow", help="experiment (default towerflow)")
    p.add_argument("--demo", type=Path, default=None, help="fill the store first (store root)")
    p.add_argument("--out", type=Path, default=None, help="also write the listing here")
    args = p.parse_args(argv)
    if args.uri.startswith("file:"):
        # MLflow 3 refuses its file store unless asked; fine for a local listing.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if args.demo is not None:
        fill_demo(args.demo, args.uri, args.experiment)
    text = dump(args.uri, args.experiment)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        log.info("wrote %s", args.out)
    print(text)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    raise SystemExit(main())

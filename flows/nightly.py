"""The nightly flow: check config -> data -> train -> embed -> evaluate + gate -> catalogue
-> index -> publish -> report."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.runtime import flow_run

from core.config import NightlyConfig
from core.lifecycle import exclusive_nightly, resolve_runtime
from flows.sharded import build_index_on_dask, embed_and_evaluate_on_dask, prepare_data_on_dask
from tasks.report import report_failures
from tasks.steps import nightly_steps
from tasks.tracking import track_failures, track_published

__all__ = ["nightly"]


def run_name() -> str:
    """Readable flow run names: `nightly-<source>-<scale>-<UTC date-time>`
    (`nightly-<snapshot id>-<UTC date-time>` on a stored snapshot)."""
    cfg = flow_run.parameters.get("config")
    config = cfg if isinstance(cfg, NightlyConfig) else NightlyConfig.model_validate(cfg or {})
    data = config.data
    what = data.snapshot_id if data.source == "snapshot" else f"{data.source}-{data.scale}"
    return f"nightly-{what}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name="nightly", flow_run_name=run_name, log_prints=False)
def nightly(config: NightlyConfig = NightlyConfig()) -> str:  # noqa: B008
    """Train and publish a new version; return its id.

    Steps:
    0. check-config: what can be checked before training (``core.precheck``): the index
       factory parses, the device exists, the import files are there, the store root is
       writable.
    1. prepare-data: generate or import (or reuse) the immutable data snapshot.
       With ``runtime.task_runner: dask`` a new synthetic snapshot is drawn by the subflow
       ``prepare-data-sharded``: user blocks mapped over the cluster, joined in order.
    2. begin-version: open a staging folder; remember CURRENT for the compare-and-swap.
    3. train-model: fit both towers on the training split (early stopping on validation
       when configured); stage weights and feature tables.
    4. embed-items: every item through the item tower (unknown bucket for unseen items).
    5. evaluate + quality-gate: full-ranking test metrics vs popularity, a classical
       collaborative filter and (synthetic data) the oracle;
       below the gate the run fails and CURRENT is unchanged.
       With ``runtime.task_runner: dask`` steps 4 and 5 run as the subflow
       ``embed-evaluate-sharded`` (``flows.sharded``): item and user shards mapped over a
       Dask cluster, merged into the same files and figures.
    6. merge-catalogue: items created / changed / retired since the snapshot (the item
       catalogue) folded in, new ones embedded by the new model.
    7. build-index: Faiss inner-product index with real item IDs, its search knob tuned on
       real user vectors to the Recall@k target vs exact search (below it the run fails).
       With ``runtime.task_runner: dask`` it runs as the subflow ``build-index-sharded``:
       trained once, item shards added on the workers, inverted lists merged.
    8. stage-report: metric history and plots (loss, Recall@K vs K, history) staged.
    9. publish-version: fold in catalogue entries that arrived during the run, checksum,
       fsync, verify, compare-and-swap CURRENT (on a conflict: catch up, retry).
    10. post-report: `nightly-report` (markdown + plots), `nightly-metrics` (table) and
        `nightly-report-file` (HTML) artifacts.
    11. track-run (``tracking.backend: mlflow``): parameters, metrics, plots and the
        version id to MLflow; a failed run is tracked too, with its reason.
    Two nightly runs on one store never overlap (the second fails at once); a run that
    fails still posts `nightly-report` with the reason. Each step fails past its time
    limit (``runtime.timeouts``, seconds).
    """
    runtime = resolve_runtime(config.runtime)
    root, threads, resume = runtime.root, runtime.threads, config.runtime.resume
    steps = nightly_steps(config.runtime.timeouts)
    with report_failures(root):
        steps.check_config(config)  # before the lock and the data: a bad config fails fast
    with (
        exclusive_nightly(root, f"flow run {flow_run.get_name()}"),
        report_failures(root),
        track_failures(config),
    ):
        if config.runtime.task_runner == "dask":
            snapshot = prepare_data_on_dask(root, config.data, config.runtime)
        else:
            snapshot = steps.prepare_data(root, config.data)
        stage = steps.begin_version(root)
        trained = steps.train_model(
            snapshot,
            stage,
            config.data,
            config.tower,
            config.train,
            threads,
            config.evaluation,
            resume,
            config.selection,
        )
        if config.runtime.task_runner == "dask":
            report = embed_and_evaluate_on_dask(
                snapshot, stage, config.data, config.evaluation, config.runtime, threads
            )
        else:
            steps.embed_catalogue(stage, threads, resume, config.runtime.embed_batch_size)
            report = steps.evaluate_model(
                snapshot, stage, config.data, config.evaluation, threads, resume
            )
        steps.quality_gate(report, stage)
        steps.merge_catalogue(stage)
        if config.runtime.task_runner == "dask":
            index = build_index_on_dask(stage, config.index, config.runtime, threads)
        else:
            index = steps.build_item_index(stage, config.index, threads)
        steps.stage_report(stage, snapshot, trained, report, config.evaluation.validation_metric)
        version_id = steps.publish_version(
            stage,
            snapshot,
            config.model_dump(mode="json"),
            index,
            runtime.keep_versions,
            runtime.keep_item_versions,
        )
        steps.post_report(version_id, root)
    # Outside the lock: a slow tracking server must not hold the store. Never fails the
    # run (tasks.tracking): the version is published already.
    track_published(version_id, root, config)
    return version_id

"""The nightly pipeline without Prefect: the same steps, in the same order, as the nightly
flow (``flows/nightly.py``), for notebooks, other orchestrators and tests.

The flow adds what Prefect gives (retries, a task run per step, artifacts on the run page);
the steps themselves are the functions called here, so a run with the same configuration
publishes the same model, metrics and index either way.
"""

from __future__ import annotations

import logging

from core.config import NightlyConfig
from core.evaluation import enforce_gate
from core.indexing import build_version_index
from core.items import merge_catalogue
from core.lifecycle import (
    begin_version,
    discard_version,
    exclusive_nightly,
    publish_version,
    resolve_runtime,
)
from core.precheck import precheck
from core.progress import Progress, ProgressFactory, StepLogger
from core.reports import stage_report_files
from core.resume import embed_step, evaluate_step, train_step
from core.snapshots import ensure_snapshot
from core.threads import apply_threads
from core.tracking import track_version

__all__ = ["run_nightly"]

log = logging.getLogger(__name__)


def run_nightly(
    config: NightlyConfig | None = None,
    *,
    logger: StepLogger = log,
    progress: ProgressFactory = Progress,
) -> str:
    """Train, evaluate, gate, index and publish a new version in this process; returns
    its id.

    Steps (as in the flow): config check (``core.precheck``) -> data snapshot -> staging
    folder -> train -> embed items -> evaluate + quality gate -> fold in the item
    catalogue -> build and tune the index -> stage the report files -> compare-and-swap
    CURRENT -> track (``tracking.backend: mlflow``). A failing step (the quality gate, the
    index's recall target, bad data) raises, leaves CURRENT unchanged and removes the
    staging folder; training, embedding and evaluation a failed run finished are reused
    by the next (``core.resume``). Holds the store's nightly lock, like the flow, so the
    two never overlap on one store.
    """
    config = config or NightlyConfig()
    if config.runtime.task_runner != "local":
        # Shards are mapped by the flow's task runner (flows.sharded); without Prefect
        # every step runs here. Same files and figures, one process.
        logger.warning(
            "runtime.task_runner %r applies to the nightly flow; run_nightly runs every "
            "step in this process",
            config.runtime.task_runner,
        )
    precheck(config)  # a bad index factory, device or path fails here, not after training
    runtime = resolve_runtime(config.runtime)
    root = runtime.root
    apply_threads(runtime.threads)
    with exclusive_nightly(root, "run_nightly (Python API)"):
        snapshot = ensure_snapshot(root, config.data)
        stage = begin_version(root, logger=logger)
        try:
            resume = config.runtime.resume
            trained = train_step(
                snapshot,
                stage,
                config.data,
                config.tower,
                config.train,
                config.evaluation,
                selection=config.selection,
                resume=resume,
                logger=logger,
                progress=progress,
            )
            embed_step(
                stage,
                config.runtime.embed_batch_size,
                resume=resume,
                logger=logger,
                progress=progress,
            )
            report = evaluate_step(
                snapshot, stage, config.data, config.evaluation, resume=resume, logger=logger
            )
            enforce_gate(report, stage, logger=logger)
            merge_catalogue(stage, logger=logger)
            index = build_version_index(stage, config.index, logger=logger)
            stage_report_files(
                stage,
                snapshot,
                trained,
                report,
                config.evaluation.validation_metric,
                logger=logger,
            )
            version_id = publish_version(
                stage,
                snapshot,
                config.model_dump(mode="json"),
                index,
                runtime.keep_versions,
                keep_item_versions=runtime.keep_item_versions,
                logger=logger,
            )
        except BaseException:
            # The flow leaves a failed run's staging folder to begin-version's clean-up of
            # abandoned folders; here nothing else will, so remove it now.
            discard_version(stage)
            raise
    if config.tracking.backend != "none":
        # As the flow's track-run: published already, so a tracking failure only warns.
        try:
            track_version(root, version_id, config.tracking, logger=logger)
        except Exception as e:
            logger.warning("version %s is published but NOT tracked in MLflow: %s", version_id, e)
    return version_id

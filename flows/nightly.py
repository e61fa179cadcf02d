"""The nightly flow: data -> train -> embed -> evaluate + gate -> index -> publish -> report."""

from __future__ import annotations

from prefect import flow

from tasks.config import NightlyConfig
from tasks.data import prepare_data
from tasks.embed import embed_catalogue
from tasks.evaluate import evaluate_model, quality_gate
from tasks.index import build_item_index
from tasks.publish import begin_version, publish_version, resolve_runtime
from tasks.report import post_report
from tasks.train import train_model

__all__ = ["nightly"]


@flow(name="nightly", log_prints=False)
def nightly(config: NightlyConfig = NightlyConfig()) -> str:  # noqa: B008
    """Train and publish a new version; return its id.

    Steps:
    1. prepare-data: generate or import (or reuse) the immutable data snapshot.
    2. begin-version: open a staging folder; remember CURRENT for the compare-and-swap.
    3. train-model: fit both towers on the training split (early stopping on validation
       when configured); stage weights and feature tables.
    4. embed-items: every item through the item tower (unknown bucket for unseen items).
    5. evaluate + quality-gate: full-ranking test metrics vs popularity, a classical
       collaborative filter and (synthetic data) the oracle;
       below the gate the run fails and CURRENT is unchanged.
    6. build-index: Faiss inner-product index with real item IDs, its search knob tuned on
       real user vectors to the Recall@k target vs exact search (below it the run fails).
    7. publish-version: checksum, fsync, verify, compare-and-swap CURRENT.
    8. post-report: markdown summary and metrics table artifacts.
    """
    runtime = resolve_runtime(config.runtime)
    root, threads = runtime.root, runtime.threads
    snapshot = prepare_data(root, config.data)
    stage = begin_version(root)
    trained = train_model(
        snapshot, stage, config.data, config.tower, config.train, threads, config.evaluation
    )
    n_items = embed_catalogue(stage, threads)
    report = evaluate_model(snapshot, stage, config.data, config.evaluation, threads)
    quality_gate(report, stage)
    index = build_item_index(stage, config.index, threads)
    version_id = publish_version(
        stage,
        snapshot,
        config.model_dump(mode="json"),
        n_items,
        index,
        runtime.keep_versions,
    )
    post_report(version_id, snapshot, trained, report, index)
    return version_id

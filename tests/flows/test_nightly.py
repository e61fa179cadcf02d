"""The nightly flow end to end on the tiny scale, under the shared Prefect test harness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from core.config import IndexConfig, NightlyConfig
from core.evaluation import QualityGateError
from core.indexing import IndexRecallError
from core.nightly import run_nightly
from core.versionio import read_embeddings
from flows.nightly import nightly
from storage import Layout, VersionFiles, VersionStore, read_json, read_table
from storage.schemas import VERSION_ITEMS
from tests.conftest import Published
from tests.flows.test_nightly_reports import artifacts

pytestmark = pytest.mark.prefect


def _config(root: str, **evaluation: object) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 4},
            "evaluation": evaluation,
            "runtime": {"storage_root": root},
        }
    )


def test_run_publishes_a_complete_version_that_beats_popularity(published: Published) -> None:
    store = VersionStore(Layout(published.root))
    assert store.current() == published.version_id
    version = store.open_current(verify=True)
    manifest = version.manifest
    items = read_table(version.file(VersionFiles.ITEMS), VERSION_ITEMS)
    assert manifest.item_count == items.num_rows == 600
    assert manifest.metric == "inner_product"
    assert manifest.embedding_dim == manifest.config["tower"]["embedding_dim"]
    assert manifest.lineage.data_snapshot.startswith("synthetic-tiny-seed42-")
    assert manifest.lineage.parent_version is None
    assert set(manifest.files) >= {"model.pt", "model.json", "index.faiss", "metrics.json"}
    rankers = published.output["metrics"]["rankers"]
    assert rankers["model"]["recall@50"] > 2 * rankers["popularity"]["recall@50"]
    assert rankers["oracle"]["recall@50"] >= rankers["model"]["recall@50"] * 0.9


def test_run_reports_cold_start_recall_of_held_back_items(published: Published) -> None:
    cold = published.output["metrics"]["cold_start"]
    assert cold["n_items"] >= 10 and cold["n_users"] >= 20
    rankers = cold["rankers"]
    assert set(rankers) == {"model", "random", "category popularity", "user's categories"}
    # From content alone the model ranks the new arrivals well above chance (measured at
    # tiny: Recall@10 0.97 vs random 0.44).
    assert rankers["model"]["recall@10"] > 1.5 * rankers["random"]["recall@10"]


def test_run_posts_report_and_metrics_artifacts(published: Published) -> None:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["nightly-report", "nightly-metrics"])
            )
        )
    # Keyed artifacts keep one version per run; other tests run the flow too.
    assert {a.key for a in found} == {"nightly-report", "nightly-metrics"}
    reports = [str(a.data) for a in found if a.key == "nightly-report"]
    (report,) = [s for s in reports if f"published `{published.version_id}`" in s]
    assert "| model |" in report and "| popularity |" in report


def test_failed_quality_gate_leaves_current_unchanged(published: Published) -> None:
    store = VersionStore(Layout(published.root))
    before = store.current()
    staged_before = sorted(p.name for p in Layout(published.root).staging_versions_dir.iterdir())
    with pytest.raises(QualityGateError, match="CURRENT is unchanged"):
        nightly(_config(str(published.root), gate_min_lift=1000.0))
    assert store.current() == before
    staged_after = sorted(p.name for p in Layout(published.root).staging_versions_dir.iterdir())
    assert staged_after == staged_before  # the rejected version's staging folder is gone
    assert [v.version_id for v in store.list_versions()] == [before]
    # The run's report says why nothing was published and what keeps serving.
    failures = [str(a.data) for a in artifacts("nightly-report") if "NOT published" in str(a.data)]
    md = next(f for f in failures if "QualityGateError: quality gate failed" in f)
    assert f"CURRENT is unchanged: `{before}` keeps serving." in md


def test_index_below_its_recall_target_is_not_published(published: Published) -> None:
    store = VersionStore(Layout(published.root))
    before = store.current()
    cfg = _config(str(published.root)).model_copy(
        update={"index": IndexConfig(factory="IVF8,PQ2", target_recall=0.99, k=50)}
    )
    with pytest.raises(IndexRecallError, match=r"below the target 0\.99"):
        nightly(cfg)
    assert store.current() == before
    assert not list(Layout(published.root).staging_versions_dir.iterdir())


def test_manifest_records_the_measured_index_recall(published: Published) -> None:
    extra = VersionStore(Layout(published.root)).open_current().manifest.extra["index"]
    # 600 items: exact search, so recall against exact is 1 by construction.
    assert extra["factory"] == "Flat" and extra["recall"] == 1.0
    assert extra["k"] == 100 and extra["target_recall"] == 0.95
    assert extra["single_query_p99_ms"] > 0


def test_second_run_reuses_the_snapshot_and_chains_lineage(
    published: Published, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("chain")
    first = nightly(_config(str(root)))
    second = nightly(_config(str(root)))
    store = VersionStore(Layout(root))
    assert store.current() == second
    m1, m2 = store.open_version(first).manifest, store.open_version(second).manifest
    assert m2.lineage.parent_version == first
    assert m2.lineage.data_snapshot == m1.lineage.data_snapshot
    assert len(list(Layout(root).data_dir.iterdir())) == 1  # generated once, reused
    # Same data, config and seeds: the two versions hold the same item vectors.
    ids1, vecs1 = read_embeddings(store.open_version(first).path)
    ids2, vecs2 = read_embeddings(store.open_version(second).path)
    np.testing.assert_array_equal(ids1, ids2)
    np.testing.assert_allclose(vecs1, vecs2, atol=1e-5)
    # The second version's report compares with the first and extends its metric history.
    history = read_json(store.open_version(second).file(VersionFiles.METRICS_HISTORY))
    assert [h["version_id"] for h in history] == [first, second]
    (md,) = [str(a.data) for a in artifacts("nightly-report") if f"`{second}`" in str(a.data)]
    assert f"Change vs the previous published version `{first}`" in md
    assert "| model metric | previous | this run | change |" in md


def test_python_api_run_nightly_publishes_what_the_flow_publishes(
    published: Published, tmp_path: Path
) -> None:
    """``core.run_nightly`` runs the flow's steps in the flow's order: same configuration,
    same metrics, embeddings and index summary (the `published` fixture ran the flow)."""
    version_id = run_nightly(_config(str(tmp_path)))
    ours = VersionStore(Layout(tmp_path)).open_version(version_id, verify=True)
    theirs = VersionStore(Layout(published.root)).open_version(published.version_id)
    metrics = read_json(ours.file(VersionFiles.METRICS))
    assert metrics == read_json(theirs.file(VersionFiles.METRICS))
    assert metrics["rankers"]["model"]["recall@50"] > 0  # the comparison is not vacuous
    ids, vectors = read_embeddings(ours.path)
    flow_ids, flow_vectors = read_embeddings(theirs.path)
    np.testing.assert_array_equal(ids, flow_ids)
    np.testing.assert_array_equal(vectors, flow_vectors)
    for key in ("factory", "n_items", "knob", "knob_value", "recall"):
        assert ours.manifest.extra["index"][key] == theirs.manifest.extra["index"][key], key

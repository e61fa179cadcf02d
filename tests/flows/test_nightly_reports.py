"""What an operator sees of a nightly run: the report, metrics, progress and link
artifacts, the plots and history stored with the version, the report of a run that did
not publish, and the lock that keeps two runs from overlapping."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.objects import Artifact

from core.config import NightlyConfig
from core.lifecycle import OverlappingRunError
from flows.nightly import nightly
from storage import Layout, VersionFiles, VersionStore, file_lock, read_json
from tests.conftest import Published

pytestmark = pytest.mark.prefect

_PNG = b"\x89PNG\r\n\x1a\n"


def artifacts(*keys: str) -> list[Artifact]:
    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys)))
            )
        )


def _config(root: Path, **evaluation: object) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 3},
            "evaluation": evaluation,
            "runtime": {"storage_root": str(root)},
        }
    )


def test_report_artifact_has_every_section_and_embedded_plots(published: Published) -> None:
    reports = [str(a.data) for a in artifacts("nightly-report")]
    (md,) = [r for r in reports if f"published `{published.version_id}`" in r]
    for heading in ("## Training", "## Quality", "## Cold start", "## Index"):
        assert heading in md, heading
    assert "snapshot `synthetic-tiny-seed42-" in md and "600 items" in md
    assert "Quality gate: model recall@50" in md and "(passed)" in md
    assert "% of the oracle's recall@50" in md
    assert "| ranker | recall@10 |" in md and "| oracle |" in md
    assert "No previous published version to compare with." in md
    assert "`Flat`" in md and "measured Recall@100 1.0000" in md
    # Two plots inline (loss, Recall@K), as PNG data the UI renders without file access.
    assert md.count("](data:image/png;base64,") == 3


def test_report_file_link_points_at_the_html_report(published: Published) -> None:
    links = [a for a in artifacts("nightly-report-file") if published.version_id in str(a.data)]
    assert links, "no link artifact for the published version"
    # The link artifact's data is markdown: [text](file:...).
    url = re.search(r"\]\((file:[^)]+)\)", str(links[0].data))
    assert url is not None, links[0].data
    path = Path(urlparse(url.group(1)).path)
    html = path.read_text()
    assert path.parent == Layout(published.root).reports_dir
    assert html.startswith("<!DOCTYPE html>") and published.version_id in html
    assert html.count('<img src="data:image/png;base64,') == 3


def test_progress_artifacts_reach_100_percent(published: Published) -> None:
    found = artifacts("train-progress", "embed-progress")
    assert {a.key for a in found} == {"train-progress", "embed-progress"}
    assert all(float(a.data) == 100.0 for a in found), [(a.key, a.data) for a in found]  # type: ignore[arg-type]


def test_version_keeps_training_curve_history_and_plots(published: Published) -> None:
    version = VersionStore(Layout(published.root)).open_version(published.version_id)
    training = read_json(version.file(VersionFiles.TRAINING))
    loss = training["epoch_loss"]
    assert len(loss) == 4 and loss[-1] < loss[0]
    (entry,) = read_json(version.file(VersionFiles.METRICS_HISTORY))
    assert entry["version_id"] == published.version_id
    assert entry["data"]["n_items"] == 600 and entry["gate_metric"] == "recall@50"
    assert entry["metrics"]["model"]["recall@50"] == pytest.approx(
        published.output["metrics"]["rankers"]["model"]["recall@50"], abs=1e-6
    )
    for name in (VersionFiles.PLOT_LOSS, VersionFiles.PLOT_RECALL_AT_K, VersionFiles.PLOT_HISTORY):
        png = version.file(name).read_bytes()
        assert png.startswith(_PNG) and len(png) > 5_000, name
    curve = published.output["metrics"]["recall_curve"]["model"]
    ks = sorted(curve, key=int)
    assert ks == ["1", "5", "10", "20", "50", "100", "200"]
    values = [curve[k] for k in ks]
    assert values == sorted(values) and values[-1] > values[0]  # Recall@K grows with K


def test_a_second_nightly_on_the_same_store_fails_at_once(published: Published) -> None:
    store = VersionStore(Layout(published.root))
    before = store.current()
    lock = Layout(published.root).nightly_lock
    with (
        file_lock(lock, timeout_s=1, owner=f"flow run other-run (pid {os.getpid()})"),
        pytest.raises(OverlappingRunError, match="other-run"),
    ):
        nightly(_config(published.root))
    assert store.current() == before
    # The lock is free again once its holder is done.
    with file_lock(lock, timeout_s=0):
        pass

"""Experiment tracking (``core.tracking``, ``core.ablation_tracking.track_ablation``, the track-run
task) against a real MLflow store in a temporary folder.

The store is MLflow's file store (``file://``): it needs nothing beyond the MLflow client
(``towerflow[mlflow]``, in the dev extra) and no server process; MLflow 3 refuses it
unless ``MLFLOW_ALLOW_FILE_STORE=true``, which the fixture sets for this module only. What
is logged goes through the same ``MlflowClient`` calls as against an HTTP server.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from core.ablation import AblationResult, Variant, ladder, run_ablation
from core.ablation_tracking import track_ablation
from core.config import NightlyConfig, TaskTimeouts, TrackingConfig
from core.evaluation import QualityGateError
from core.nightly import run_nightly
from core.precheck import ConfigCheckError, check_tracking
from core.tracking import (
    Tracker,
    TrackingClientMissingError,
    config_params,
    metric_key,
    track_failure,
    track_version,
)
from storage import Layout, VersionFiles, VersionStore, read_json

EXPERIMENT = "towerflow-test"
PLOTS = {VersionFiles.PLOT_LOSS, VersionFiles.PLOT_RECALL_AT_K, VersionFiles.PLOT_HISTORY}


@dataclass(frozen=True)
class Tracked:
    root: Path
    config: NightlyConfig
    versions: list[str]
    variants: list[Variant]
    ablation: AblationResult
    client: MlflowClient
    experiment_id: str

    def runs(self, **tags: str) -> list[Run]:
        """Runs of the experiment whose tags include ``tags``."""
        found = self.client.search_runs(
            [self.experiment_id], run_view_type=ViewType.ALL, max_results=1000
        )
        return [r for r in found if all(r.data.tags.get(k) == v for k, v in tags.items())]


def _config(root: Path, uri: str, seed: int, **evaluation: Any) -> NightlyConfig:
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 3, "seed": seed},
            "evaluation": evaluation,
            "runtime": {"storage_root": str(root)},
            "tracking": {"backend": "mlflow", "uri": uri, "experiment": EXPERIMENT},
        }
    )


@pytest.fixture(scope="module")
def mlflow_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(scope="module")
def tracked(mlflow_env: None, tmp_path_factory: pytest.TempPathFactory) -> Tracked:
    """Two tracked nightly versions (train seeds 0 and 1, so their figures differ), one
    tracked nightly that failed its quality gate, one tracked three-rung ablation."""
    root = tmp_path_factory.mktemp("store")
    uri = (tmp_path_factory.mktemp("mlflow") / "mlruns").as_uri()
    versions = []
    for seed in (0, 1):
        config = _config(root, uri, seed)
        versions.append(run_nightly(config))  # tracks the version itself (run = version id)
    failing = _config(root, uri, 0, gate_min_lift=100.0)
    with pytest.raises(QualityGateError) as failed:
        run_nightly(failing)
    track_failure(failing, failed.value, run_name="nightly-gate")
    config = _config(root, uri, 0)
    variants = ladder(uniform_negatives=32, history_len=4)[:3]
    result = run_ablation(config, variants, str(root))
    track_ablation(config, variants, result, run_name="ablation-test")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    return Tracked(root, config, versions, variants, result, client, experiment.experiment_id)


def test_metric_keys_and_params_are_what_mlflow_accepts() -> None:
    assert metric_key("model", "recall@50") == "model/recall_at_50"
    assert metric_key("cold_start", "user's categories", "ndcg@10") == (
        "cold_start/user_s categories/ndcg_at_10"
    )
    params = config_params(
        {"train": {"lr": 0.003, "hidden": [128]}, "data": {"overrides": {}}, "runtime": {"x": 1}}
    )
    assert params == {"train.lr": "0.003", "train.hidden": "[128]", "data.overrides": "{}"}


def test_a_missing_client_is_named_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = TrackingConfig(backend="mlflow")
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow fails
    with pytest.raises(TrackingClientMissingError, match=r"pip install 'towerflow\[mlflow\]'"):
        Tracker.open(cfg)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a)
    )
    with pytest.raises(ConfigCheckError, match=r"pip install 'towerflow\[mlflow\]'"):
        check_tracking(cfg)
    check_tracking(TrackingConfig())  # tracking off: nothing to check


@pytest.mark.e2e
def test_the_store_holds_each_nightly_the_failed_one_and_the_ablation(tracked: Tracked) -> None:
    nightly = tracked.runs(kind="nightly")
    assert sorted((r.info.run_name, r.info.status) for r in nightly) == [
        ("nightly-gate", "FAILED"),
        *sorted((v, "FINISHED") for v in tracked.versions),
    ]
    (parent,) = tracked.runs(kind="ablation")
    rungs = tracked.runs(kind="ablation-rung")
    assert parent.info.run_name == "ablation-test" and parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in rungs) == sorted(v.name for v in tracked.variants)
    assert {r.data.tags["mlflow.parentRunId"] for r in rungs} == {parent.info.run_id}
    assert len(tracked.runs()) == 3 + 1 + len(tracked.variants)


@pytest.mark.e2e
def test_a_nightly_run_holds_the_versions_figures_exactly(tracked: Tracked, tmp_path: Path) -> None:
    store = VersionStore(Layout(tracked.root))
    for seed, version_id in enumerate(tracked.versions):
        (run,) = tracked.runs(kind="nightly", version_id=version_id)
        version = store.open_version(version_id)
        metrics = read_json(version.file(VersionFiles.METRICS))
        training = read_json(version.file(VersionFiles.TRAINING))
        index = version.manifest.extra["index"]
        logged = run.data.metrics
        expected = {
            metric_key(ranker, name): value
            for ranker, values in metrics["rankers"].items()
            for name, value in values.items()
        }
        assert {k: logged[k] for k in expected} == expected
        assert {"model/recall_at_50", "popularity/recall_at_50", "oracle/recall_at_50"} <= set(
            expected
        )
        assert logged["index/recall"] == index["recall"]
        assert logged["index/single_query_p50_ms"] == index["single_query_p50_ms"]
        assert logged["train/examples_per_s"] == training["examples_per_s"]
        assert logged["train/seconds"] == pytest.approx(sum(training["epoch_seconds"]))
        loss = tracked.client.get_metric_history(run.info.run_id, "train/loss")
        assert [(m.step, m.value) for m in loss] == list(enumerate(training["epoch_loss"], 1))
        curve = tracked.client.get_metric_history(run.info.run_id, "recall_curve/model")
        assert {m.step: m.value for m in curve} == {
            int(k): v for k, v in metrics["recall_curve"]["model"].items()
        }
        # Parameters: the version's config, model-defining sections only.
        params = run.data.params
        assert params["train.seed"] == str(seed) and params["train.epochs"] == "3"
        assert params["data.scale"] == "tiny" and params["evaluation.ks"] == "[10, 50, 100]"
        assert params == config_params(version.manifest.config)
        assert not any(k.startswith(("runtime.", "tracking.")) for k in params)
        tags = run.data.tags
        assert tags["snapshot_id"] == version.manifest.lineage.data_snapshot
        assert tags["index_factory"] == index["factory"]
        # Artifacts: the plots and the two JSON files, byte for byte.
        names = {a.path for a in tracked.client.list_artifacts(run.info.run_id)}
        assert names == PLOTS | {VersionFiles.METRICS, VersionFiles.TRAINING}
        got = Path(
            tracked.client.download_artifacts(
                run.info.run_id, VersionFiles.PLOT_LOSS, str(tmp_path)
            )
        )
        assert got.read_bytes() == version.file(VersionFiles.PLOT_LOSS).read_bytes()
    first, second = (tracked.runs(version_id=v)[0].data.metrics for v in tracked.versions)
    assert first["train/loss"] != second["train/loss"]  # two trainings, two records


@pytest.mark.e2e
def test_tracking_a_version_again_logs_nothing_new(tracked: Tracked) -> None:
    before = len(tracked.runs())
    again = track_version(tracked.root, tracked.versions[0], tracked.config.tracking)
    assert again.existed
    assert again.run_id == tracked.runs(version_id=tracked.versions[0])[0].info.run_id
    assert len(tracked.runs()) == before


@pytest.mark.e2e
def test_a_failed_nightly_is_tracked_with_its_reason(tracked: Tracked) -> None:
    (run,) = tracked.runs(kind="nightly", published="false")
    assert run.info.status == "FAILED"
    assert run.data.tags["failure"].startswith("QualityGateError: quality gate failed")
    assert run.data.params["evaluation.gate_min_lift"] == "100.0"
    assert run.data.metrics == {}


@pytest.mark.e2e
def test_the_ablation_has_a_parent_and_a_nested_run_per_rung(
    tracked: Tracked, tmp_path: Path
) -> None:
    result = tracked.ablation
    (parent,) = tracked.runs(kind="ablation")
    assert parent.data.params["ladder"] == " | ".join(v.name for v in tracked.variants)
    assert parent.data.params["train.epochs"] == "3"
    assert parent.data.tags["snapshot_id"] == result.snapshot_id
    # The rung chosen on validation (every rung has a score: the split has validation).
    assert result.chosen is not None and parent.data.tags["chosen"] == result.chosen
    references = {"popularity", "ease", "oracle"}
    assert references <= set(result.rankers)
    for ranker in references:
        assert parent.data.metrics[f"{ranker}/recall_at_50"] == result.rankers[ranker]["recall@50"]
    names = {a.path for a in tracked.client.list_artifacts(parent.info.run_id)}
    assert names == {"ablation.md", "ablation.json"}
    runs = {r.name: r for r in result.runs}
    for variant in tracked.variants:
        (rung,) = tracked.runs(kind="ablation-rung", **{"mlflow.runName": variant.name})
        overrides = {f"tower.{k}": str(v) for k, v in variant.tower.items()}
        overrides |= {f"train.{k}": str(v) for k, v in variant.train.items()}
        assert rung.data.params == overrides
        expected = {metric_key("model", k): v for k, v in result.rankers[variant.name].items()}
        assert {k: rung.data.metrics[k] for k in expected} == expected
        validation = runs[variant.name].validation
        assert validation is not None
        assert rung.data.metrics["validation/recall_at_50"] == validation
        loss = tracked.client.get_metric_history(rung.info.run_id, "train/loss")
        assert [m.value for m in loss] == list(runs[variant.name].epoch_loss)
        assert len(loss) == runs[variant.name].epochs == 3
    assert tracked.runs(**{"mlflow.runName": "bce pointwise"})[0].data.params["train.loss"] == "bce"


# -- the Prefect task -------------------------------------------------------------------


def _closed_url() -> str:
    """The URL of a port nothing listens on (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _artifact_texts(key: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return [str(a.data) for a in found]


@pytest.mark.e2e
@pytest.mark.prefect
def test_track_run_names_the_run_after_the_flow_run_and_never_fails_it(
    tracked: Tracked, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    from tasks.tracking import track_failures, track_published

    # A server that is down: one attempt, no backoff (MLflow's default retries for minutes).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    live = TrackingConfig(backend="mlflow", uri=tracked.config.tracking.uri, experiment="task")
    up = tracked.config.model_copy(update={"tracking": live})
    down = up.model_copy(update={"tracking": TrackingConfig(backend="mlflow", uri=_closed_url())})
    root, version = str(tracked.root), tracked.versions[1]

    @flow(name="track-run-test", flow_run_name="nightly-tracked")
    def tracked_flow(hung_uri: str) -> list[str | None]:
        # A server that accepts connections and never answers: track-run's time limit.
        hung = down.model_copy(
            update={
                "tracking": TrackingConfig(backend="mlflow", uri=hung_uri),
                "runtime": down.runtime.model_copy(update={"timeouts": TaskTimeouts(track_run=2)}),
            }
        )
        return [track_published(version, root, c) for c in (up, down, hung)]

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        start = time.monotonic()
        run_id, down_id, hung_id = tracked_flow(f"http://127.0.0.1:{listener.getsockname()[1]}")
    assert down_id is None and hung_id is None and run_id is not None
    assert time.monotonic() - start < 25  # the hung server cost the 2 s limit, not 30 s
    run = tracked.client.get_run(run_id)
    assert run.info.run_name == "nightly-tracked" and run.info.status == "FINISHED"
    assert run.data.tags["version_id"] == version and "prefect_flow_run_id" in run.data.tags
    texts = _artifact_texts("nightly-tracking")
    assert any(f"`{version}` is MLflow run `{run_id}`" in t for t in texts)
    failures = [t for t in texts if "**Not tracked** in MLflow" in t and version in t]
    assert len(failures) == 2, texts
    assert any("runtime.timeouts.track_run, 2 s" in t for t in failures), failures

    @flow(name="track-failures-test", flow_run_name="nightly-broken")
    def failing_flow() -> None:
        with track_failures(up):
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        failing_flow()
    experiment = tracked.client.get_experiment_by_name("task")
    assert experiment is not None
    (failed,) = tracked.client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'FAILED'"
    )
    assert failed.info.run_name == "nightly-broken"
    assert failed.data.tags["failure"] == "RuntimeError: disk on fire"

"""Experiment tracking in MLflow (``tracking.backend: mlflow``): one run per published
nightly version and one per failed nightly; the ablation's parent and rung runs
(``core.ablation_tracking.track_ablation``) use the same client, ``Tracker``.

What a nightly run holds is read back from the published version (its manifest,
metrics.json, training.json, plots), not from the flow's memory, so a version can be
tracked again later: ``track_version`` is idempotent per version and experiment.

MLflow is optional (``pip install 'towerflow[mlflow]'``) and imported only inside the
functions that talk to it: importing this module does not load it. Every function here
raises on failure; callers decide whether a failure matters (the nightly's track-run
step does not let it fail a run that published: ``tasks.tracking``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from core.config import NightlyConfig, TrackingConfig
from core.progress import StepLogger
from core.report_data import PLOTS, load_version_report
from storage import Layout, VersionFiles, VersionStore

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from core.evaluation import EvalReport
    from core.refs import IndexSummary
    from core.training import TrainSummary

__all__ = [
    "INSTALL_HINT",
    "KIND",
    "NIGHTLY_SECTIONS",
    "SNAPSHOT",
    "VERSION",
    "Point",
    "TrackedRun",
    "Tracker",
    "TrackingClientMissingError",
    "config_params",
    "metric_key",
    "ranker_points",
    "track_failure",
    "track_version",
]

log = logging.getLogger(__name__)

INSTALL_HINT: Final = "pip install 'towerflow[mlflow]'"
# The config sections that define a model; runtime (paths, threads, timeouts) and tracking
# describe the machine and say nothing about the result, so they are not parameters.
NIGHTLY_SECTIONS: Final = ("data", "tower", "train", "evaluation", "index")
# Tag keys: plain names, so filters need no backticks (`tags.version_id = 'v...'`).
KIND, VERSION, SNAPSHOT = "kind", "version_id", "snapshot_id"
# Files of a version logged as artifacts next to the plots: the exact figures, readable.
_JSON_ARTIFACTS: Final = (VersionFiles.METRICS, VersionFiles.TRAINING)
# Characters MLflow refuses in metric and parameter keys ('@' included; ':' is allowed on
# POSIX clients only, so it is replaced too and keys work from any client).
_BAD_KEY_CHARS = re.compile(r"[^/\w.\- ]")
# MLflow's per-request batch limits (mlflow.utils.validation).
_MAX_METRICS, _MAX_PARAMS = 1000, 100


class TrackingClientMissingError(ImportError):
    """``tracking.backend`` is 'mlflow' but the MLflow client is not installed."""


class Point(NamedTuple):
    """One metric value; ``step`` orders a series (epoch, K), 0 for a single value."""

    key: str
    value: float
    step: int = 0


@dataclass(frozen=True)
class TrackedRun:
    """Where a run went: its id, its experiment, the tracking URI used, and whether a
    finished run for the same version already existed (nothing was logged again)."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    existed: bool = False

    @property
    def url(self) -> str | None:
        """The run's page in the MLflow UI (HTTP tracking servers only)."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return None
        base = self.tracking_uri.rstrip("/")
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def metric_key(*parts: str) -> str:
    """An MLflow key from name parts joined by '/': ``metric_key("model", "recall@50")``
    is ``model/recall_at_50``; any other character MLflow refuses becomes '_'."""
    return _BAD_KEY_CHARS.sub("_", "/".join(parts).replace("@", "_at_"))


def config_params(
    config: Mapping[str, Any], sections: Sequence[str] = NIGHTLY_SECTIONS
) -> dict[str, str]:
    """``sections`` of a config dump flattened to dotted keys (``train.lr``); values as
    MLflow writes them (``str``), lists whole (``[10, 50, 100]``)."""
    params: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        else:
            params[metric_key(prefix)] = str(value)

    for section in sections:
        if config.get(section):  # an empty section (a rung that overrides nothing) says nothing
            walk(section, config[section])
    return params


# -- the MLflow client ------------------------------------------------------------------


@dataclass(frozen=True)
class Tracker:
    """An MLflow client bound to one experiment (created when missing)."""

    client: MlflowClient
    experiment_id: str
    uri: str  # the tracking URI in use

    @classmethod
    def open(cls, cfg: TrackingConfig) -> Tracker:
        """Connect to ``cfg.uri`` (None: $MLFLOW_TRACKING_URI, else MLflow's default) and
        find or create experiment ``cfg.experiment``."""
        try:
            from mlflow import MlflowClient, get_tracking_uri
            from mlflow.exceptions import MlflowException
        except ImportError as e:
            raise TrackingClientMissingError(
                f"tracking.backend is 'mlflow' but the MLflow client is not installed: "
                f"{INSTALL_HINT}"
            ) from e
        uri = cfg.uri or get_tracking_uri()
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(cfg.experiment)
        if found is None:
            try:
                return cls(client, str(client.create_experiment(cfg.experiment)), uri)
            except MlflowException:
                # Another process created it since the lookup (two runs starting together).
                found = client.get_experiment_by_name(cfg.experiment)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise ValueError(
                f"MLflow experiment {cfg.experiment!r} is deleted: restore it, or set "
                "tracking.experiment to another name"
            )
        return cls(client, str(found.experiment_id), uri)

    @contextmanager
    def run(self, name: str, tags: Mapping[str, str], status: str = "FINISHED") -> Iterator[str]:
        """A new run that ends with ``status``, or FAILED when the block raises (so a
        half-logged run is never taken for a complete one: ``track_version`` logs the
        version again). Yields the run id."""
        from mlflow.tracking.context.registry import resolve_tags

        # resolve_tags adds what MLflow's own start_run records: user, source, git commit.
        run = self.client.create_run(
            self.experiment_id, run_name=name, tags=resolve_tags(dict(tags))
        )
        run_id = str(run.info.run_id)
        try:
            yield run_id
        except BaseException:
            try:
                self.client.set_terminated(run_id, "FAILED")
            except Exception:  # the original error says more than a second one
                log.debug("could not mark MLflow run %s FAILED", run_id, exc_info=True)
            raise
        self.client.set_terminated(run_id, status)

    def log(self, run_id: str, params: Mapping[str, str], points: Sequence[Point] = ()) -> None:
        """Parameters and metric values, in batches within MLflow's per-request limits."""
        from mlflow.entities import Metric, Param

        now_ms = int(time.time() * 1000)
        metrics = [Metric(p.key, float(p.value), now_ms, p.step) for p in points]
        for i in range(0, len(metrics), _MAX_METRICS):
            self.client.log_batch(run_id, metrics=metrics[i : i + _MAX_METRICS], synchronous=True)
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(run_id, params=items[i : i + _MAX_PARAMS], synchronous=True)

    def tracked(self, run_id: str, existed: bool = False) -> TrackedRun:
        """``run_id`` of this experiment, as returned to callers."""
        return TrackedRun(run_id, self.experiment_id, self.uri, existed)


# -- what a nightly version holds, as metrics ----------------------------------------------


def ranker_points(rankers: Mapping[str, Mapping[str, float]], *prefix: str) -> list[Point]:
    """``<prefix>/<ranker>/<metric>`` for every metric of every ranker."""
    return [
        Point(metric_key(*prefix, ranker, name), value)
        for ranker, metrics in rankers.items()
        for name, value in metrics.items()
    ]


def _evaluation_points(e: EvalReport) -> list[Point]:
    """Test metrics of every ranker (``model/recall_at_50``, ``popularity/...``), the gate,
    the baseline's tuning, cold start, and Recall@K per ranker as a series over K."""
    points = ranker_points(e.rankers)
    points += [
        Point("eval/n_users", e.n_users),
        Point("eval/n_items", e.n_items),
        Point("gate/threshold", e.gate_threshold),
        Point("gate/passed", float(e.gate_passed)),
    ]
    points += [Point(metric_key("baseline_tuning", k), v) for k, v in e.baseline_tuning.items()]
    cold = e.cold_start or {}
    points += ranker_points(cold.get("rankers", {}), "cold_start")
    points += [Point(f"cold_start/{k}", cold[k]) for k in ("n_items", "n_users") if k in cold]
    points += [
        Point(metric_key("recall_curve", ranker), value, int(k))
        for ranker, curve in e.recall_curve.items()
        for k, value in curve.items()
    ]
    return points


def _training_points(t: TrainSummary) -> list[Point]:
    """Loss, validation metric and seconds per epoch (step = epoch, from 1), total train
    seconds and throughput (examples / s)."""
    points = [Point("train/loss", v, i) for i, v in enumerate(t.epoch_loss, 1)]
    points += [
        Point("train/validation", v, i)
        for i, v in enumerate(t.epoch_validation, 1)
        if v is not None
    ]
    points += [Point("train/epoch_seconds", v, i) for i, v in enumerate(t.epoch_seconds, 1)]
    points += [
        Point("train/seconds", sum(t.epoch_seconds)),
        Point("train/examples_per_s", t.examples_per_s),
        Point("train/epochs", len(t.epoch_loss)),
        Point("train/n_examples", t.n_examples),
    ]
    if t.best_epoch is not None:
        points.append(Point("train/best_epoch", t.best_epoch))
    return points


def _index_points(ix: IndexSummary) -> list[Point]:
    """Measured recall vs exact search, single-query latency (ms), build time (s), size."""
    points = [
        Point("index/recall", ix.recall),
        Point("index/single_query_p50_ms", ix.single_query_p50_ms),
        Point("index/single_query_p99_ms", ix.single_query_p99_ms),
        Point("index/build_seconds", ix.build_seconds),
        Point("index/bytes", ix.bytes),
        Point("index/n_items", ix.n_items),
    ]
    if ix.knob_value is not None:
        points.append(Point("index/knob_value", ix.knob_value))
    return points


def track_version(
    root: str | Path,
    version_id: str,
    tracking: TrackingConfig,
    *,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    logger: StepLogger = log,
) -> TrackedRun:
    """Log published ``version_id`` of the store at ``root`` as one MLflow run named
    ``run_name`` (default: the version id): the config it was trained with as parameters,
    its test, training and index figures as metrics, version and snapshot ids as tags,
    its plots, metrics.json and training.json as artifacts; ``tags`` are added as given.

    Idempotent: when the experiment already holds a finished run of this version, that
    run is returned (``existed``) and nothing is logged again. The files read are checked
    against the version's checksums first (not the model or the index: they are not read).
    """
    store = VersionStore(Layout(Path(root)))
    version = store.open_version(version_id, verify=False)
    manifest = version.manifest
    read = [VersionFiles.METRICS, VersionFiles.TRAINING, VersionFiles.METRICS_HISTORY, *PLOTS]
    store.verify(version_id, [n for n in read if n in manifest.files])
    inputs = load_version_report(store, version_id, verify=False)

    tracker = Tracker.open(tracking)
    done = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=(
            f"tags.{KIND} = 'nightly' and tags.{VERSION} = '{version_id}' "
            "and attributes.status = 'FINISHED'"
        ),
        max_results=1,
    )
    if done:
        logger.info("version %s is already tracked: MLflow run %s", version_id, done[0].info.run_id)
        return tracker.tracked(str(done[0].info.run_id), existed=True)

    labels = {KIND: "nightly", VERSION: version_id, "published": "true"}
    labels["created_at"] = manifest.created_at
    if manifest.lineage.data_snapshot:
        labels[SNAPSHOT] = manifest.lineage.data_snapshot
    if manifest.lineage.parent_version:
        labels["parent_version"] = manifest.lineage.parent_version
    points = [Point(f"data/{k}", v) for k, v in inputs.data.items() if isinstance(v, int)]
    if inputs.evaluation is not None:
        points += _evaluation_points(inputs.evaluation)
        labels["gate_metric"] = inputs.evaluation.gate_metric
        labels["protocol"] = inputs.evaluation.protocol
    if inputs.train is not None:
        points += _training_points(inputs.train)
        labels["device"] = inputs.train.device
    if inputs.index is not None:
        points += _index_points(inputs.index)
        labels["index_factory"] = inputs.index.factory
    with tracker.run(run_name or version_id, {**labels, **(tags or {})}) as run_id:
        tracker.log(run_id, config_params(manifest.config), points)
        for name in (*_JSON_ARTIFACTS, *PLOTS):
            if name in manifest.files:
                tracker.client.log_artifact(run_id, str(version.file(name)))
    logger.info(
        "tracked version %s in MLflow: run %s (%d metric values), experiment %r at %s",
        version_id,
        run_id,
        len(points),
        tracking.experiment,
        tracker.uri,
    )
    return tracker.tracked(run_id)


def track_failure(
    config: NightlyConfig,
    error: BaseException,
    *,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    logger: StepLogger = log,
) -> TrackedRun:
    """Log a nightly run that published nothing: its parameters, status FAILED and the
    reason (tag ``failure`` and the run's description)."""
    tracker = Tracker.open(config.tracking)
    # Tag values are capped at 8000 characters by MLflow; a reason is one line or a few.
    reason = f"{type(error).__name__}: {error}"[:4000]
    labels = {KIND: "nightly", "published": "false", "failure": reason}
    # The description MLflow's UI shows on the run's page.
    labels["mlflow.note.content"] = f"Not published: {reason}"
    with tracker.run(run_name, {**labels, **(tags or {})}, status="FAILED") as run_id:
        tracker.log(run_id, config_params(config.model_dump(mode="json")))
    logger.info("tracked the failed run in MLflow: run %s", run_id)
    return tracker.tracked(run_id)

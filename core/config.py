"""Typed parameters of the pipeline steps, composed into the nightly flow's parameters.

These pydantic models are what Prefect validates and shows in the UI; each field has a
description. Model and training knobs live with the model (``model.config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from core.import_config import ImportConfig
from core.recipes import SelectionConfig, candidates
from core.store import resolve_root
from model.config import TowerConfig, TrainConfig
from model.dataset import SplitProtocol
from model.synthetic import SCALES, check_scale
from storage.settings import (
    DEFAULT_KEEP_ITEM_VERSIONS,
    DEFAULT_KEEP_VERSIONS,
    DEFAULT_MAX_DELTA_CHAIN,
)

__all__ = [
    "DaskConfig",
    "DataConfig",
    "EvalConfig",
    "IndexConfig",
    "NightlyConfig",
    "RuntimeConfig",
    "SelectionConfig",
    "TaskTimeouts",
    "TowerConfig",
    "TrackingConfig",
    "TrainConfig",
    "load_config",
    "resolve_root",
    "validation_summary",
]


class DataConfig(BaseModel):
    """Where the training data comes from and how it is split in time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["synthetic", "import", "snapshot"] = Field(
        "synthetic",
        description="Data source: 'synthetic' generates a world with ground truth; 'import' "
        "reads real logs described by `importing`; 'snapshot' reuses the stored snapshot "
        "`snapshot_id` (generated or imported earlier) as it is.",
    )
    snapshot_id: str | None = Field(
        None,
        description="Source 'snapshot': the id of a stored data snapshot (`towerflow "
        "snapshots` lists them; `towerflow import` prints the id it made).",
    )
    importing: ImportConfig | None = Field(
        None, description="Files, column mapping and rules of source 'import'."
    )
    scale: str = Field("small", description=f"Synthetic scale, one of {sorted(SCALES)}.")
    seed: int = Field(42, description="Generator seed (same seed + scale = same snapshot).")
    overrides: dict[str, float] = Field(
        default_factory=dict,
        description="Generator knob overrides, e.g. {'temperature': 0.2, 'popularity_skew': 1.0}.",
    )
    protocol: SplitProtocol = Field(
        "temporal",
        description="Evaluation split: 'temporal' (global time cut), 'random_ratio' (per-user "
        "random split by `ratios`, RecBole's protocol) or 'leave_one_out' (each user's latest "
        "interaction is test, the one before validation).",
    )
    val_frac: float = Field(
        0.1, ge=0, lt=1, description="'temporal': share of the timeline for validation."
    )
    test_frac: float = Field(
        0.1, gt=0, lt=1, description="'temporal': share of the timeline for test."
    )
    ratios: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="'random_ratio': train / validation / test shares per user."
    )
    split_seed: int = Field(0, description="Seed of the per-user protocols' shuffles and ties.")

    @field_validator("scale")
    @classmethod
    def _known_scale(cls, v: str) -> str:
        return check_scale(v)

    @model_validator(mode="after")
    def _import_needs_files(self) -> Self:
        if self.source == "import" and self.importing is None:
            raise ValueError("source 'import' needs `importing` (files and column mapping)")
        if self.source == "snapshot" and not self.snapshot_id:
            raise ValueError("source 'snapshot' needs `snapshot_id` (a stored snapshot's id)")
        if self.snapshot_id is not None and self.source != "snapshot":
            raise ValueError(
                f"`snapshot_id` is only read with source 'snapshot' (source is {self.source!r})"
            )
        return self


class EvalConfig(BaseModel):
    """Full-ranking evaluation and the quality gate that guards publishing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ks: tuple[int, ...] = Field((10, 50, 100), description="Cut-offs K of Recall/NDCG/HitRate@K.")
    curve_ks: tuple[int, ...] = Field(
        (1, 5, 10, 20, 50, 100, 200),
        description="Cut-offs of the Recall@K-vs-K curve in the report (capped at the catalogue).",
    )
    max_users: int | None = Field(
        20_000,
        ge=1,
        description="Evaluate a seeded sample of at most this many test users (None = all).",
    )
    gate_metric: str = Field("recall@50", description="Metric the quality gate compares.")
    gate_min_lift: float = Field(
        0.2,
        description="Publish only if model >= popularity * (1 + lift) on the gate metric.",
    )
    seed: int = Field(0, description="Seed of the evaluated-user sample.")
    score_block_users: int | None = Field(
        None,
        ge=1,
        description="Test users scored against every item at once (memory: this x items x "
        "4 bytes); None = about 16M scores per block, at most 1024 users. Shards of "
        "runtime.task_runner 'dask' start on whole blocks.",
    )
    baseline: Literal["auto", "itemknn", "ease", "none"] = Field(
        "auto",
        description="Classical collaborative filter evaluated next to the model: EASE when the "
        "catalogue is small enough for its dense item-item inverse, else ItemKNN ('auto').",
    )
    ease_max_items: int = Field(
        10_000,
        ge=1,
        description="'auto' fits EASE up to this many trained items (its dense inverse took "
        "~2.5 min at 20k items on 2 cores), ItemKNN above.",
    )
    baseline_max_items: int = Field(
        200_000,
        ge=1,
        description="Above this many items the classical baseline is skipped (logged).",
    )
    validation_metric: str = Field(
        "recall@50",
        description="Validation metric early stopping watches (train.early_stopping_patience).",
    )
    validation_users: int | None = Field(
        5000, ge=1, description="Validation users sampled for early stopping (None = all)."
    )


class IndexConfig(BaseModel):
    """The Faiss index built over the item vectors and the recall it must keep."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    factory: str = Field(
        "auto",
        description="faiss.index_factory string (inner product), or 'auto': exact 'Flat' up to "
        "50k items, IVF-Flat up to 5M, IVF-PQ with refinement above.",
    )
    target_recall: float = Field(
        0.95,
        gt=0,
        le=1,
        description="Recall@k vs exact search the tuned index must reach, or nothing is published.",
    )
    k: int = Field(100, ge=1, description="k of the recall target.")
    tune_queries: int = Field(
        1000, ge=10, description="Sampled real user vectors used to tune and check recall."
    )
    seed: int = Field(0, description="Seed of the query sample and the IVF training sample.")


class TaskTimeouts(BaseModel):
    """Wall-clock limit of each step (the nightly's and the new-items flow's), in seconds,
    by task name: a step past its limit fails the run (Prefect's task ``timeout_seconds``)
    instead of holding the store's lock forever.
    The defaults leave ample room for a 1M-item catalogue on 2 cores; set them closer to
    your own runs' times (the nightly report lists each step's time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check_config: float = Field(600, gt=0, description="check-config.")
    prepare_data: float = Field(4 * 3600, gt=0, description="prepare-data (generate/import).")
    begin_version: float = Field(600, gt=0, description="begin-version.")
    train_model: float = Field(12 * 3600, gt=0, description="train-model.")
    embed_items: float = Field(3 * 3600, gt=0, description="embed-items.")
    evaluate: float = Field(6 * 3600, gt=0, description="evaluate (full ranking + baselines).")
    quality_gate: float = Field(600, gt=0, description="quality-gate.")
    merge_catalogue: float = Field(3 * 3600, gt=0, description="merge-catalogue.")
    build_index: float = Field(6 * 3600, gt=0, description="build-index (build + tuning).")
    stage_report: float = Field(1800, gt=0, description="stage-report.")
    publish_version: float = Field(3 * 3600, gt=0, description="publish-version.")
    post_report: float = Field(1800, gt=0, description="post-report.")
    track_run: float = Field(1800, gt=0, description="track-run (experiment tracking).")
    record_items: float = Field(1800, gt=0, description="record-items (items event).")
    announce_rejections: float = Field(300, gt=0, description="announce-rejections.")
    publish_catalogue: float = Field(3 * 3600, gt=0, description="publish-catalogue.")
    report_items: float = Field(600, gt=0, description="report-items.")
    request_compaction: float = Field(300, gt=0, description="request-compaction.")
    compact_chain: float = Field(3 * 3600, gt=0, description="compact-chain.")


class DaskConfig(BaseModel):
    """The Dask cluster of ``runtime.task_runner: dask`` and how the split steps are cut.

    Synthetic data generation, item embedding, full-ranking evaluation and the index build
    run as shards mapped over the workers (``core.sharded``); each shard reads the store
    and writes a part file, so every worker must reach the store's root at the same path
    (a shared or network file system; for an ``s3://`` root, ``TOWERFLOW_CACHE_DIR`` on
    one, since staging lives in the local cache)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str | None = Field(
        None,
        description="Scheduler of an existing cluster (e.g. tcp://10.0.0.5:8786); None = a "
        "local cluster of n_workers processes, started and stopped with the run.",
    )
    n_workers: int = Field(
        2,
        ge=1,
        description="Worker processes of the local cluster; also the shard count when a "
        "shard size is None (set it to the workers of an existing cluster).",
    )
    task_threads: int | None = Field(
        None,
        ge=1,
        description="torch / Faiss threads in each shard task; None = the CPU budget divided "
        "by n_workers on a local cluster (workers must not oversubscribe the cores), 1 on an "
        "existing cluster (size its workers with --nthreads and this).",
    )
    generate_shard_users: int | None = Field(
        None,
        ge=1,
        description="Users per synthetic-data shard, rounded up to whole generator blocks; "
        "None = the blocks split in n_workers shards (each shard draws the world again: "
        "1.4 s at 1M items).",
    )
    embed_shard_items: int | None = Field(
        None,
        ge=1,
        description="Items per embedding shard, rounded up to whole batches; None = the "
        "catalogue split in n_workers shards.",
    )
    eval_shard_users: int | None = Field(
        None,
        ge=1,
        description="Test users per evaluation shard, rounded up to whole score blocks; None "
        "= the users split in n_workers shards (each shard refits the classical baseline, so "
        "more shards than workers cost more than they save).",
    )
    index_shard_items: int | None = Field(
        None,
        ge=1,
        description="Items per index-build shard (each adds its items to a copy of the "
        "trained, empty index; the merge appends the inverted lists); None = the catalogue "
        "split in n_workers shards.",
    )

    def shard_threads(self, budget: int) -> int:
        """Threads each shard task uses, for a machine whose CPU budget is ``budget``."""
        if self.task_threads is not None:
            return self.task_threads
        return 1 if self.address else max(1, budget // self.n_workers)


class RuntimeConfig(BaseModel):
    """Machine facts for this run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    storage_root: str | None = Field(
        None, description="Artifact store root; None = TOWERFLOW_ROOT or ./.towerflow."
    )
    keep_versions: int | None = Field(
        None,
        ge=1,
        description="Nightly versions kept for rollback; None = TOWERFLOW_KEEP_VERSIONS, "
        f"else {DEFAULT_KEEP_VERSIONS}.",
    )
    keep_item_versions: int | None = Field(
        None,
        ge=0,
        description="Item-event versions kept on top of CURRENT's nightly, apart from "
        "keep_versions; None = TOWERFLOW_KEEP_ITEM_VERSIONS, "
        f"else {DEFAULT_KEEP_ITEM_VERSIONS}.",
    )
    max_delta_chain: int | None = Field(
        None,
        ge=1,
        description="Deltas CURRENT may stack on its complete version before the new-items "
        "flow asks for a compaction (towerflow.chain.long); None = "
        f"TOWERFLOW_MAX_DELTA_CHAIN, else {DEFAULT_MAX_DELTA_CHAIN}.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Threads for torch and Faiss; None = $TOWERFLOW_THREADS, else the CPUs "
        "the process may use (affinity mask and cgroup CPU quota, see core.cpus).",
    )
    resume: bool = Field(
        True,
        description="Reuse the training, embedding and evaluation a failed run finished "
        "for the same snapshot, configuration and code (core.resume), instead of redoing "
        "them; False always starts from scratch.",
    )
    timeouts: TaskTimeouts = Field(
        default_factory=TaskTimeouts,  # type: ignore[arg-type]
        description="Per-step time limits in seconds.",
    )
    embed_batch_size: int = Field(
        8192,
        ge=1,
        description="Items per forward pass of the item tower when the catalogue is "
        "embedded (memory vs speed); shards of task_runner 'dask' start on whole batches.",
    )
    task_runner: Literal["local", "dask"] = Field(
        "local",
        description="'local': every step in this process. 'dask': item embedding and "
        "evaluation split into shards mapped over a Dask cluster (Prefect's DaskTaskRunner; "
        "see runtime.dask).",
    )
    dask: DaskConfig = Field(
        default_factory=DaskConfig,  # type: ignore[arg-type]
        description="The Dask cluster and shard sizes of task_runner 'dask'.",
    )


class TrackingConfig(BaseModel):
    """Experiment tracking: each nightly's and each ablation rung's parameters, metrics,
    plots and version id sent to an MLflow tracking server (``pip install
    'towerflow[mlflow]'``). Off by default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["none", "mlflow"] = Field(
        "none", description="'mlflow' logs runs to `uri`; 'none' tracks nothing."
    )
    uri: str | None = Field(
        None,
        description="MLflow tracking URI (http://host:5000, sqlite:///mlflow.db, a folder); "
        "None = $MLFLOW_TRACKING_URI, else MLflow's own default.",
    )
    experiment: str = Field("towerflow", min_length=1, description="MLflow experiment name.")


# Training epochs of a synthetic scale when ``train.epochs`` is not given. The large world
# (7.9M training interactions) needs fewer passes than the default 5: measured on its
# stored snapshot (docs/scaling.md), 3 epochs reached test Recall@50 0.02107 (3.59x
# popularity, 85.9% of the oracle) against 0.02095 (3.57x, 85.4%) with 5, and the nightly
# took 8 min 48 s instead of 14 min 28 s on 2 cores.
SCALE_EPOCHS: dict[str, int] = {"large": 3}


class NightlyConfig(BaseModel):
    """All parameters of one nightly run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)  # type: ignore[arg-type]
    tower: TowerConfig = Field(default_factory=TowerConfig)  # type: ignore[arg-type]
    train: TrainConfig = Field(default_factory=TrainConfig)  # type: ignore[arg-type]
    evaluation: EvalConfig = Field(default_factory=EvalConfig)  # type: ignore[arg-type]
    index: IndexConfig = Field(default_factory=IndexConfig)  # type: ignore[arg-type]
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)  # type: ignore[arg-type]
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)  # type: ignore[arg-type]
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig,
        description="Candidate training recipes chosen between on validation (core.recipes).",
    )

    @model_validator(mode="before")
    @classmethod
    def _scale_epochs(cls, data: Any) -> Any:
        """``SCALE_EPOCHS`` for a synthetic scale whose ``train.epochs`` was not given."""
        if not isinstance(data, dict):
            return data
        source, train = data.get("data", {}), data.get("train", {})
        scale_of = source.get if isinstance(source, dict) else lambda k, d: getattr(source, k, d)
        if scale_of("source", "synthetic") != "synthetic":
            return data
        epochs = SCALE_EPOCHS.get(str(scale_of("scale", "small")))
        if epochs is None:
            return data
        if isinstance(train, TrainConfig):
            if "epochs" in train.model_fields_set:
                return data
            return {**data, "train": train.model_copy(update={"epochs": epochs})}
        if isinstance(train, dict) and "epochs" not in train:
            return {**data, "train": {**train, "epochs": epochs}}
        return data

    @model_validator(mode="after")
    def _recipes_resolve(self) -> Self:
        # A bad override fails at load time, naming the recipe, not after hours of training.
        candidates(self.selection, self.tower, self.train)
        return self


def validation_summary(error: ValidationError) -> str:
    """A pydantic error on one line: ``field.path: reason (got value)`` per problem, joined
    by ``; `` (pydantic's own text spreads each problem over several lines)."""
    parts = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "value"
        msg = str(err["msg"]).removeprefix("Value error, ")
        given = err.get("input")
        shown = repr(given) if isinstance(given, str | int | float | bool) else ""
        parts.append(f"{loc}: {msg}" + (f" (got {shown})" if shown and len(shown) <= 60 else ""))
    return "; ".join(parts) or str(error)


def load_config(path: Path | None, overrides: dict[str, Any]) -> NightlyConfig:
    """NightlyConfig from a YAML/JSON file (optional) with dotted-key ``overrides`` applied
    (``{"train.epochs": 3}``; a None value leaves the field alone).

    Raises ValueError naming the file and the invalid field.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read config {path}: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config {path}: expected a mapping at the top level")
        raw = loaded or {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return NightlyConfig.model_validate(raw)
    except ValidationError as e:
        where = f"config {path}" if path else "options"
        raise ValueError(f"invalid {where}: {validation_summary(e)}") from e

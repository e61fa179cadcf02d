"""Resume a failed nightly: the training, embedding and evaluation an earlier run finished
are reused when their real inputs are the same, so a run that failed at the index (a bad
factory, a full disk) restarts there instead of retraining.

Each step's key is a SHA-256 over what determines its output:

- train-model: the data snapshot id, the split settings, the tower and training
  configuration, the validation settings early stopping reads, and the code version;
- embed-items: the bytes of every file the training staged (weights, tables, ID maps) and
  the code version;
- evaluate: the snapshot id, the split and evaluation settings, the bytes of every file
  staged so far (model and item vectors) and the code version.

The code version (``code_version``) hashes the source of ``model``, ``core`` and
``storage`` and the torch / Faiss versions: a fix to the training code retrains. Threads
are not in the key (they change float summation order, not the model's meaning).

The files are kept by ``storage.stepcache`` (checked against their checksums before use)
and dropped when a nightly publishes. ``runtime.resume: false`` turns reuse off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from core.config import DataConfig, EvalConfig, SelectionConfig, TowerConfig, TrainConfig
from core.embedding import embed_version_items
from core.evaluation import EvalReport, evaluate_version
from core.progress import Progress, ProgressFactory, StepLogger
from core.refs import SnapshotRef, StageRef
from core.training import TrainSummary, train_version
from storage import (
    Layout,
    VersionStore,
    restore_step,
    save_step,
    sha256_file,
    stage_listing,
    step_outputs,
)

__all__ = [
    "code_version",
    "embed_key",
    "embed_step",
    "evaluate_key",
    "evaluate_step",
    "keep_result",
    "restore_kept",
    "split_settings",
    "train_key",
    "train_step",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# The packages whose source decides what a step writes.
_CODE_PACKAGES = ("model", "core", "storage")


@functools.cache
def code_version() -> str:
    """SHA-256 (hex, 16 characters) of the source files of ``model``, ``core`` and
    ``storage`` (paths and bytes) and of the torch and Faiss versions."""
    import importlib

    import faiss
    import torch

    h = hashlib.sha256(f"torch {torch.__version__} faiss {faiss.__version__}".encode())
    for name in _CODE_PACKAGES:
        pkg = importlib.import_module(name)
        base = Path(pkg.__file__ or "").parent
        for path in sorted(base.rglob("*.py")):
            h.update(str(path.relative_to(base.parent)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _key(*parts: Any) -> str:
    text = json.dumps([code_version(), *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def split_settings(cfg: DataConfig) -> dict[str, Any]:
    """The data settings that shape the split of a stored snapshot (not where it came
    from: the snapshot id names the data)."""
    return cfg.model_dump(
        mode="json", include={"protocol", "val_frac", "test_frac", "ratios", "split_seed"}
    )


def train_key(
    snapshot: SnapshotRef,
    data_cfg: DataConfig,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig,
    selection: SelectionConfig | None = None,
) -> str:
    """Key of the training step (see the module docstring)."""
    parts: list[Any] = [
        "train-model",
        snapshot.snapshot_id,
        split_settings(data_cfg),
        tower_cfg.model_dump(mode="json"),
        train_cfg.model_dump(mode="json"),
        # Early stopping measures this metric on these users after every epoch.
        [eval_cfg.validation_metric, eval_cfg.validation_users],
    ]
    if selection is not None and selection.enabled:
        # Only when set, so keys kept by runs without a choice stay valid.
        parts.append(selection.model_dump(mode="json"))
    return _key(*parts)


def _staging(stage: StageRef) -> Path:
    """The staging folder of ``stage``."""
    return VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)


def _staged_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file staged in ``folder`` so far (hidden files excluded)."""
    return {name: sha256_file(folder / name) for name in sorted(stage_listing(folder))}


def restore_kept(
    stage: StageRef, step: str, key: str, logger: StepLogger = log
) -> dict[str, Any] | None:
    """The metadata of the kept result of ``(step, key)`` after copying its checked files
    into the stage, or None when nothing usable is kept."""
    start = time.perf_counter()
    entry = restore_step(Layout(Path(stage.root)), step, key, _staging(stage))
    if entry is None:
        return None
    logger.info(
        "%s: reused the result of an earlier run (kept %s, key %s): %d file(s) restored in %.2f s",
        step,
        entry.created_at,
        key,
        len(entry.files),
        time.perf_counter() - start,
    )
    return entry.meta


def keep_result(
    stage: StageRef,
    step: str,
    key: str,
    before: dict[str, tuple[int, int, int]],
    meta: dict[str, Any],
    logger: StepLogger = log,
) -> None:
    """Keep the files the step staged since ``before`` (``storage.stage_listing``) with
    ``meta`` for a later rerun; best effort: a failure only logs a warning."""
    staging = _staging(stage)
    try:
        save_step(
            Layout(Path(stage.root)),
            step,
            key,
            staging,
            step_outputs(before, stage_listing(staging)),
            meta,
        )
    except OSError as e:
        # A cache: the run goes on without it (a full disk fails the publish anyway).
        logger.warning("%s: could not keep the result for a rerun: %s", step, e)


def _resumable(
    stage: StageRef,
    step: str,
    key: str,
    enabled: bool,
    run: Callable[[], T],
    dump: Callable[[T], dict[str, Any]],
    load: Callable[[dict[str, Any]], T],
    logger: StepLogger,
) -> T:
    """``run()`` unless ``enabled`` and a checked result of ``(step, key)`` is kept, in which
    case its files are copied into the stage and its value loaded; a fresh result is kept
    for a later rerun (best effort: a failure to keep it only logs a warning)."""
    if enabled:
        meta = restore_kept(stage, step, key, logger)
        if meta is not None:
            return load(meta)
    before = stage_listing(_staging(stage))
    value = run()
    if enabled:
        keep_result(stage, step, key, before, dump(value), logger)
    return value


def _model_dump(value: BaseModel) -> dict[str, Any]:
    return value.model_dump(mode="json")


def train_step(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    tower_cfg: TowerConfig,
    train_cfg: TrainConfig,
    eval_cfg: EvalConfig | None = None,
    *,
    selection: SelectionConfig | None = None,
    resume: bool = True,
    logger: StepLogger = log,
    progress: ProgressFactory = Progress,
) -> TrainSummary:
    """``core.training.train_version``, or its kept result for the same inputs."""
    eval_cfg = eval_cfg or EvalConfig()
    return _resumable(
        stage,
        "train-model",
        train_key(snapshot, data_cfg, tower_cfg, train_cfg, eval_cfg, selection),
        resume,
        lambda: train_version(
            snapshot,
            stage,
            data_cfg,
            tower_cfg,
            train_cfg,
            eval_cfg,
            selection=selection,
            logger=logger,
            progress=progress,
        ),
        _model_dump,
        TrainSummary.model_validate,
        logger,
    )


def embed_key(stage: StageRef) -> str:
    """embed-items' key: the bytes of every file staged so far and the code version."""
    return _key("embed-items", _staged_digest(_staging(stage)))


def evaluate_key(
    snapshot: SnapshotRef, stage: StageRef, data_cfg: DataConfig, cfg: EvalConfig
) -> str:
    """evaluate's key: the snapshot, the split and evaluation settings, the bytes of every
    file staged so far and the code version."""
    return _key(
        "evaluate",
        snapshot.snapshot_id,
        split_settings(data_cfg),
        cfg.model_dump(mode="json"),
        _staged_digest(_staging(stage)),
    )


def embed_step(
    stage: StageRef,
    batch_size: int = 8192,
    *,
    resume: bool = True,
    logger: StepLogger = log,
    progress: ProgressFactory = Progress,
) -> int:
    """``core.embedding.embed_version_items``, or its kept result for the same staged
    model and catalogue; returns the number of items embedded."""
    key = embed_key(stage) if resume else ""
    return _resumable(
        stage,
        "embed-items",
        key,
        resume,
        lambda: embed_version_items(stage, batch_size, logger=logger, progress=progress),
        lambda n: {"count": n},
        lambda meta: int(meta["count"]),
        logger,
    )


def evaluate_step(
    snapshot: SnapshotRef,
    stage: StageRef,
    data_cfg: DataConfig,
    cfg: EvalConfig,
    *,
    resume: bool = True,
    logger: StepLogger = log,
) -> EvalReport:
    """``core.evaluation.evaluate_version``, or its kept result for the same snapshot,
    settings and staged model and vectors."""
    key = evaluate_key(snapshot, stage, data_cfg, cfg) if resume else ""
    return _resumable(
        stage,
        "evaluate",
        key,
        resume,
        lambda: evaluate_version(snapshot, stage, data_cfg, cfg, logger=logger),
        _model_dump,
        EvalReport.model_validate,
        logger,
    )

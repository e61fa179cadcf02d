"""Checks of a nightly configuration that need no data and no training: run first, so a
typo in the index factory fails in a second instead of after the whole training.

``precheck(config)`` raises on the first problem found: ``ConfigCheckError`` (a bad value,
a ``ValueError``) naming the field, ``InputFileMissingError`` for an import file that is
not there, ``storage.StoreReadOnlyError`` when the store root cannot be written.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import tempfile
from pathlib import Path

from core.config import EvalConfig, IndexConfig, NightlyConfig, TrackingConfig, TrainConfig
from core.import_config import ImportConfig
from core.recipes import candidates
from core.store import resolve_root
from storage import StoreReadOnlyError

__all__ = [
    "ConfigCheckError",
    "InputFileMissingError",
    "check_device",
    "check_gate_metric",
    "check_import_files",
    "check_index_factory",
    "check_root_writable",
    "check_snapshot_stored",
    "check_tracking",
    "faiss_reason",
    "precheck",
]


class ConfigCheckError(ValueError):
    """A configuration value that cannot work (found before any data is read)."""


class InputFileMissingError(ConfigCheckError, FileNotFoundError):
    """A file the configuration names is missing or unreadable."""


def faiss_reason(error: RuntimeError) -> str:
    """The reason in a Faiss C++ error, without the function signature, source file and
    failed assertion that precede it."""
    text = " ".join(str(error).split())
    match = re.search(r" at \S+:\d+: (?:Error: '.*?' failed: )?(.*)$", text)
    return (match.group(1) if match else text) or type(error).__name__


def check_index_factory(cfg: IndexConfig, dim: int) -> None:
    """Parse ``cfg.factory`` with ``faiss.index_factory`` at the model's vector size and
    inner product, as the index step will (nothing is trained or filled: IVF and PQ
    indexes are empty until trained, so this is cheap)."""
    if cfg.factory == "auto":
        return
    import faiss

    try:
        faiss.index_factory(dim, cfg.factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise ConfigCheckError(
            f"index.factory {cfg.factory!r} is not a valid faiss.index_factory string for "
            f"{dim}-dimensional inner-product vectors: {faiss_reason(e)}"
        ) from None


def check_gate_metric(cfg: EvalConfig) -> None:
    """The quality gate's ``name@K`` metric is computed: K is one of ``evaluation.ks``."""
    name, at, k = cfg.gate_metric.partition("@")
    if not at:
        return
    if not k.isdigit() or int(k) not in cfg.ks:
        raise ConfigCheckError(
            f"evaluation.gate_metric {cfg.gate_metric!r}: the cut-off must be one of "
            f"evaluation.ks {list(cfg.ks)} (metrics are computed only there), e.g. "
            f"'{name}@{cfg.ks[0]}'"
        )


def check_device(cfg: TrainConfig) -> None:
    """``train.device: cuda`` needs a CUDA build of torch and a visible GPU."""
    if cfg.device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigCheckError(
            "train.device is 'cuda' but torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}); use device 'auto' or 'cpu'"
        )


def check_import_files(cfg: ImportConfig | None) -> None:
    """Every file of ``data.importing`` exists and can be read."""
    if cfg is None:
        return
    sources = {"interactions": cfg.interactions, "items": cfg.items, "users": cfg.users}
    for role, src in sources.items():
        if src is None:
            continue
        path = Path(src.path).expanduser()
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise InputFileMissingError(
                f"data.importing.{role}.path {str(path)!r} {what} (resolved: {path.absolute()})"
            )
        if not os.access(path, os.R_OK):
            raise InputFileMissingError(f"data.importing.{role}.path {str(path)!r} is not readable")


def check_tracking(cfg: TrackingConfig) -> None:
    """``tracking.backend: mlflow`` needs the MLflow client installed. Only that: a
    tracking server that does not answer must not stop a nightly (tracking never fails a
    run that published, ``tasks.tracking``), so it is not contacted here."""
    # find_spec looks the package up without importing it (importing MLflow takes ~2 s).
    if cfg.backend == "mlflow" and importlib.util.find_spec("mlflow") is None:
        raise ConfigCheckError(
            "tracking.backend is 'mlflow' but the MLflow client is not installed: "
            "pip install 'towerflow[mlflow]'"
        )


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_snapshot_stored(root: Path, snapshot_id: str | None) -> None:
    """Source 'snapshot': the named snapshot is committed in the store at ``root``; else
    ``storage.SnapshotNotFoundError`` (a LookupError) listing the stored ids."""
    from storage import Layout, snapshot_path

    if snapshot_id is None:  # DataConfig's validator refuses it; keep mypy and callers honest
        raise ConfigCheckError("data.snapshot_id: source 'snapshot' needs a snapshot id")
    snapshot_path(Layout(root), snapshot_id)


def check_root_writable(root: Path) -> None:
    """The store root can be written: a probe file is created and removed in it, or, when
    it does not exist yet, its nearest existing parent lets us create it."""
    target = root if root.exists() else _existing_ancestor(root)
    if not target.is_dir():
        raise StoreReadOnlyError(root, f"{target} is not a directory")
    if target != root:
        if not os.access(target, os.W_OK | os.X_OK):
            raise StoreReadOnlyError(root, f"cannot create it in {target}")
        return
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=root)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise  # disk full is its own failure, not a read-only store
        raise StoreReadOnlyError(root, e.strerror or str(e)) from None
    os.close(fd)
    os.unlink(probe)


def precheck(config: NightlyConfig, root: str | Path | None = None) -> None:
    """Check what a nightly run with ``config`` can check before reading data: the index
    factory parses, the gate metric is computed, the training device exists, the MLflow
    client is installed when tracking is on, the import files are there, the store root
    (``root``, default the configured one) is writable.
    Raises on the first problem (see the module docstring)."""
    # Every candidate recipe's vector size and device (selection may pick any of them).
    recipes = candidates(config.selection, config.tower, config.train)
    for dim in sorted({tower.output_dim for _, tower, _ in recipes}):
        check_index_factory(config.index, dim)
    check_gate_metric(config.evaluation)
    for device in sorted({train.device for _, _, train in recipes}):
        check_device(config.train.model_copy(update={"device": device}))
    check_tracking(config.tracking)
    if config.data.source == "import":
        check_import_files(config.data.importing)
    store_root = resolve_root(root, config.runtime.storage_root)
    if config.data.source == "snapshot":
        check_snapshot_stored(store_root, config.data.snapshot_id)
    check_root_writable(store_root)

"""Data step: produce (or reuse) an immutable data snapshot for the run."""

from __future__ import annotations

from prefect import task

from core.config import DataConfig
from core.refs import SnapshotRef
from core.snapshots import ensure_snapshot
from tasks.retry import IO_RETRY

__all__ = ["prepare_data"]


@task(name="prepare-data", **IO_RETRY)
def prepare_data(root: str, cfg: DataConfig) -> SnapshotRef:
    """``core.snapshots.ensure_snapshot``: generate the synthetic snapshot for ``cfg``
    unless it is already stored; for source 'import', import the configured files
    (reused when the files are unchanged)."""
    return ensure_snapshot(root, cfg)

"""Version life cycle steps: open a staging folder and publish it atomically."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from core import lifecycle
from core.refs import IndexSummary, SnapshotRef, StageRef
from core.store import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS
from tasks.retry import IO_RETRY

__all__ = ["begin_version", "publish_version"]


@task(name="begin-version", **IO_RETRY)
def begin_version(root: str) -> StageRef:
    """``core.lifecycle.begin_version``: a staging folder on top of CURRENT."""
    return lifecycle.begin_version(root, logger=get_run_logger())


@task(name="publish-version", **IO_RETRY)
def publish_version(
    stage: StageRef,
    snapshot: SnapshotRef,
    config: dict[str, Any],
    index: IndexSummary,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
) -> str:
    """``core.lifecycle.publish_version``: catch up with the catalogue, then compare-and-swap
    CURRENT; returns the published version id."""
    return lifecycle.publish_version(
        stage,
        snapshot,
        config,
        index,
        keep_versions,
        keep_item_versions=keep_item_versions,
        logger=get_run_logger(),
    )

"""Version life cycle: open a staging folder, publish it atomically, or discard it; the
nightly lock; the resolved runtime (store root, retention, threads)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.catalogue_apply import ApplySummary, IndexRecipe
from core.catalogue_sync import catch_up_and_publish
from core.config import RuntimeConfig
from core.progress import StepLogger
from core.refs import IndexSummary, SnapshotRef, StageRef
from core.store import attach_database, resolve_root
from storage import (
    Layout,
    Lineage,
    StorageSettings,
    VersionFiles,
    VersionStore,
    clear_steps,
    read_json,
)
from storage.backends import StoreLockTimeout, store_lock
from storage.manifest import FileEntry, utc_now_iso
from storage.settings import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS

__all__ = [
    "OverlappingRunError",
    "Runtime",
    "begin_version",
    "discard_version",
    "exclusive_nightly",
    "publish_version",
    "resolve_runtime",
]

log = logging.getLogger(__name__)


_ABANDONED_AFTER_S = 6 * 3600.0
_PUBLISH_LOCK_TIMEOUT_S = 600.0


class Runtime(BaseModel):
    """RuntimeConfig with every default resolved."""

    root: str
    keep_versions: int
    keep_item_versions: int
    max_delta_chain: int
    threads: int | None


def resolve_runtime(cfg: RuntimeConfig) -> Runtime:
    """Fill unset storage fields from the environment (TOWERFLOW_ROOT, TOWERFLOW_KEEP_VERSIONS,
    TOWERFLOW_KEEP_ITEM_VERSIONS, else ./.towerflow, 5 and 10); the root becomes absolute
    so every task agrees on it."""
    env = StorageSettings()
    root = resolve_root(None, cfg.storage_root)
    attach_database(Layout(root), env)
    return Runtime(
        root=str(root),
        keep_versions=cfg.keep_versions or env.keep_versions,
        keep_item_versions=(
            env.keep_item_versions if cfg.keep_item_versions is None else cfg.keep_item_versions
        ),
        max_delta_chain=cfg.max_delta_chain or env.max_delta_chain,
        threads=cfg.threads,
    )


class OverlappingRunError(RuntimeError):
    """Another nightly run holds the store's nightly lock."""


class StepTimeoutError(TimeoutError):
    """A step of a run went past its time limit (``runtime.timeouts``)."""

    def __init__(self, step: str, seconds: float, setting: str) -> None:
        super().__init__(
            f"step {step!r} ran past its time limit of {seconds:g} s and was stopped; "
            f"nothing was published and CURRENT is unchanged (raise runtime.timeouts."
            f"{setting} if the step needs longer)"
        )
        self.step, self.seconds, self.setting = step, seconds, setting


@contextmanager
def exclusive_nightly(root: str, run: str) -> Iterator[None]:
    """Hold the store's nightly lock for the ``with`` block; if another nightly run holds
    it, fail at once naming that run (two overlapping rebuilds would double the load and
    race for CURRENT). The lock holds across machines on a store bound to PostgreSQL
    (``storage.backends.store_lock``); the kernel, or PostgreSQL, frees a crashed run's."""
    owner = f"{run} (host {socket.gethostname()}, pid {os.getpid()}, since {utc_now_iso()})"
    try:
        with store_lock(Layout(Path(root)), "nightly", timeout_s=0, owner=owner):
            yield
    except StoreLockTimeout as e:
        if e.name != "nightly":
            raise  # raised inside the block (a publish lock), not by this lock
        raise OverlappingRunError(
            f"another nightly run is in progress on {root}: {e}; this run did nothing"
        ) from None


def begin_version(root: str, *, logger: StepLogger = log) -> StageRef:
    """Open a staging folder for a new version; remember CURRENT as the expected parent."""
    store = VersionStore(Layout(Path(root)))
    # Leftovers of crashed runs: at once when their owner process is gone (publishers
    # hold the publish lock from their rename to their commit, so under it an unregistered version
    # folder is dead too); folders with no owner marker once idle this long.
    with store_lock(store.layout, "publish", _PUBLISH_LOCK_TIMEOUT_S):
        for path in store.collect_dead(publish_locked=True):
            logger.info("removed %s, left by a dead run", path)
    for path in store.gc(min_age_s=_ABANDONED_AFTER_S):
        logger.info("removed abandoned %s", path)
    parent = store.current()
    version_id = store.new_version_id()
    store.begin(version_id, kind="nightly")
    logger.info("building version %s on top of %s", version_id, parent)
    return StageRef(root=root, version_id=version_id, parent=parent)


def discard_version(stage: StageRef) -> None:
    """Delete a staged version that will not be published (e.g. it failed the gate)."""
    VersionStore(Layout(Path(stage.root))).discard(stage.version_id)


def publish_version(
    stage: StageRef,
    snapshot: SnapshotRef,
    config: dict[str, Any],
    index: IndexSummary,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    *,
    keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
    logger: StepLogger = log,
) -> str:
    """Fold in the catalogue entries that arrived during the run (embedded by the new
    model), then checksum, fsync, verify and commit the staged version as CURRENT
    (compare-and-swap against the CURRENT seen when the run began; if cold-start versions
    were published meanwhile, catch up again and publish over the newest). Returns the
    published version id.

    The manifest records the evaluation metrics and the index's measured recall/latency.
    """
    store = VersionStore(Layout(Path(stage.root)), keep_versions, keep_item_versions)
    staging = store.staging_path(stage.version_id)
    metrics = read_json(staging / VersionFiles.METRICS)

    def publish(expected: str | None, applied: ApplySummary, carried: dict[str, FileEntry]) -> str:
        return store.publish(
            stage.version_id,
            expected_current=expected,
            config=config,
            lineage=Lineage(
                data_snapshot=snapshot.snapshot_id,
                parent_version=expected,
                catalogue_seq=applied.seq,
                applied_events=applied.applied_events,
            ),
            embedding_dim=index.dim,
            metric="inner_product",
            item_count=applied.n_items,
            metrics=metrics,
            extra={"index": index.model_dump(mode="json")},
            keep_staging_on_conflict=True,
            kind="nightly",
            carried=carried,
        ).version_id

    recipe = IndexRecipe(index.factory, index.knob, index.knob_value, params=index.params)
    version_id = catch_up_and_publish(store, stage.version_id, stage.parent, recipe, publish)
    logger.info("published version %s", version_id)
    # The steps a failed run kept for a rerun (core.resume) are superseded now.
    try:
        removed = clear_steps(store.layout)
        log.debug("dropped %d step result(s) kept for a rerun", removed)
    except OSError as e:  # published already: leftovers only cost disk until the next one
        logger.warning("could not drop kept step results: %s", e)
    return version_id

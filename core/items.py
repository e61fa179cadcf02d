"""The item catalogue's operations: record an items event (validate, report rejections,
append = acknowledge), publish CURRENT + the catalogue entries it lacks, and fold the
catalogue into a nightly build."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel

from core.catalogue_apply import apply_changes, write_catalogue_state
from core.catalogue_sync import require_current, sync_current
from core.delta_publish import served_now
from core.deltas import resolve_chain
from core.items_validation import (
    MAX_FILE_ITEMS,
    MAX_INLINE_ITEMS,
    ItemsBatch,
    Validated,
    read_items_file,
    resolve_inbox_path,
    validate_retirements,
    validate_upserts,
)
from core.progress import StepLogger
from core.refs import StageRef
from model.config import TowerSpec
from model.ids import isin_sorted
from storage import (
    Layout,
    VersionFiles,
    VersionStore,
    read_json,
)
from storage.backends import open_catalogue
from storage.remote_binding import read_remote
from storage.settings import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS

__all__ = [
    "CurrentView",
    "OnRejected",
    "RecordSummary",
    "apply_items",
    "merge_catalogue",
    "publish_catalogue",
    "record_items",
    "rejection_table",
]

log = logging.getLogger(__name__)

_MAX_REJECTION_ROWS: Final = 1000


class RecordSummary(BaseModel):
    """What `record-items` did with one event."""

    event_id: str
    operation: str
    duplicate: bool
    received: int
    accepted: int
    rejected: int
    changed: int  # accepted items whose catalogue state changed (others were identical)
    head: int  # catalogue head after the append
    inserted: int = 0  # changed items CURRENT did not hold (creates)
    updated: int = 0  # changed items CURRENT held (creates: new content; retires: removed)
    reasons: dict[str, int] = {}  # rejection reason -> items, most frequent first (<= 20)


def _validate(root: Path, batch: ItemsBatch, current: CurrentView | None = None) -> Validated:
    raw = batch.items if batch.items is not None else None
    if raw is None:
        assert batch.path is not None  # ItemsBatch's validator
        # Confined to the inbox before anything is read: `UnsafeItemsPath` otherwise.
        layout = Layout(root)
        path = resolve_inbox_path(layout.inbox_dir, batch.path, batch.event_id)
        remote = read_remote(layout)
        if remote is not None and not path.exists() and path.parent == layout.inbox_dir.resolve():
            # An object-store root: the event was sent from another machine.
            path.parent.mkdir(parents=True, exist_ok=True)
            remote.fetch_inbox(path.name, path)
        raw = read_items_file(path)
    limit = MAX_INLINE_ITEMS if batch.items is not None else MAX_FILE_ITEMS
    if batch.operation == "retire":
        return validate_retirements(raw, limit)
    return validate_upserts(raw, (current or CurrentView(root)).content_dim(), limit)


def rejection_table(batch: ItemsBatch, validated: Validated) -> tuple[list[dict[str, Any]], str]:
    """The rejected items (position, item_id, reason; the first 1,000) and a one-line
    description of the event's rejections."""
    rows = [
        {"position": r.position, "item_id": r.item_id, "reason": r.reason}
        for r in validated.rejected[:_MAX_REJECTION_ROWS]
    ]
    more = len(validated.rejected) - len(rows)
    description = (
        f"event {batch.event_id} ({batch.operation}): {len(validated.rejected)} of "
        f"{validated.received} items rejected" + (f", first {len(rows)} shown" if more else "")
    )
    return rows, description


# Called with the batch and its validation when some items were rejected (the Prefect
# task posts them as an artifact).
OnRejected: TypeAlias = Callable[[ItemsBatch, Validated], None]


class CurrentView:
    """What recording an event reads of CURRENT (the model's content width, the served
    item IDs), read once for events recorded together: CURRENT's chain can be tens of
    deltas deep, and resolving it per event cost 0.4 s per event at 1M items."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._content_dim: int | None = None
        self._served: npt.NDArray[np.int64] | None = None

    def content_dim(self) -> int:
        if self._content_dim is None:
            store = VersionStore(Layout(self.root))
            chain = resolve_chain(store, require_current(store, verify=False))
            # Only this file is read: check it alone (a delta holds no model: its base's).
            store.verify(chain.base.version_id, [VersionFiles.MODEL_CONFIG])
            spec = TowerSpec.model_validate(read_json(chain.base_file(VersionFiles.MODEL_CONFIG)))
            self._content_dim = spec.content_dim
        return self._content_dim

    def served_ids(self) -> npt.NDArray[np.int64]:
        """(I,) sorted item IDs CURRENT serves (to tell inserts from updates)."""
        if self._served is None:
            store = VersionStore(Layout(self.root))
            require_current(store, verify=False)  # a clear error before the first nightly
            # The base's item IDs and the chain's deltas, verified; kept by this process,
            # so a later batch reads only the deltas published since (core.delta_publish).
            self._served = served_now(store).item_id
        return self._served


def record_items(
    root: str,
    batch: ItemsBatch,
    *,
    logger: StepLogger = log,
    on_rejected: OnRejected | None = None,
    current: CurrentView | None = None,
) -> RecordSummary:
    """Validate the batch (against CURRENT's model for creates), hand the rejected items
    with their reasons to ``on_rejected``, and append the valid ones to the catalogue: once
    this returns they are acknowledged. A repeated event is a no-op.

    An event whose file cannot be used fails whole with a ``ValueError`` before anything
    is recorded (so a redelivery fails the same way): `UnsafeItemsPath` when its ``path``
    is not a file inside the store's inbox (nothing is read), else a read error.
    ``current``: CURRENT as read for earlier events of the same batch."""
    current = current or CurrentView(Path(root))
    catalogue = open_catalogue(Layout(Path(root)))
    if catalogue.has_event(batch.event_id):
        logger.info("event %s was already recorded: nothing to do", batch.event_id)
        head = catalogue.head()
        return RecordSummary(
            event_id=batch.event_id,
            operation=batch.operation,
            duplicate=True,
            received=0,
            accepted=0,
            rejected=0,
            changed=0,
            head=head,
        )
    validated = _validate(Path(root), batch, current)
    reasons = Counter(r.reason for r in validated.rejected).most_common(20)
    if validated.rejected:
        if on_rejected is not None:
            on_rejected(batch, validated)
        for r in validated.rejected[:20]:
            logger.warning("rejected item %s (position %d): %s", r.item_id, r.position, r.reason)
    if batch.operation == "retire":
        result = catalogue.append_retirements(batch.event_id, validated.retire_ids)
        accepted = len(validated.retire_ids)
    else:
        result = catalogue.append_upserts(batch.event_id, validated.upserts)
        accepted = len(validated.upserts)
    # Sorted served IDs: a binary search, not np.isin's sort of a million IDs per event.
    held = int(isin_sorted(np.asarray(result.changed, np.int64), current.served_ids()).sum())
    logger.info(
        "event %s: %d of %d items accepted (%d changed), %d rejected; catalogue head %d",
        batch.event_id,
        accepted,
        validated.received,
        len(result.changed),
        len(validated.rejected),
        result.head,
    )
    return RecordSummary(
        event_id=batch.event_id,
        operation=batch.operation,
        duplicate=result.duplicate,
        received=validated.received,
        accepted=accepted,
        rejected=len(validated.rejected),
        changed=len(result.changed),
        head=result.head,
        inserted=0 if batch.operation == "retire" else len(result.changed) - held,
        updated=held,
        reasons=dict(reasons),
    )


def publish_catalogue(
    root: str,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
    *,
    logger: StepLogger = log,
) -> str:
    """Publish CURRENT + the catalogue entries it lacks (embedded with CURRENT's model),
    compare-and-swap with bounded retries; returns CURRENT's id afterwards.

    CURRENT is verified first: on corrupt bytes it raises `CorruptVersionError` and
    publishes nothing (the entries stay in the catalogue for the next nightly)."""
    result = sync_current(Layout(Path(root)), keep_versions, keep_item_versions)
    for path in result.removed:
        logger.info("removed %s, left by a dead run", path)
    logger.info(
        "%s %s: catalogue up to %d, %d items (attempt %d)",
        "published" if result.published else "CURRENT is up to date:",
        result.version_id,
        result.seq,
        result.n_items,
        result.attempts,
    )
    return result.version_id


def apply_items(
    root: str,
    batch: ItemsBatch,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
    *,
    logger: StepLogger = log,
) -> tuple[RecordSummary, str]:
    """What the new-items flow does with one event, in this process: record the batch
    (acknowledged once recorded), then publish CURRENT + the catalogue entries it lacks.
    Returns what was recorded and CURRENT's id afterwards."""
    recorded = record_items(root, batch, logger=logger)
    return recorded, publish_catalogue(root, keep_versions, keep_item_versions, logger=logger)


def merge_catalogue(stage: StageRef, *, logger: StepLogger = log) -> int:
    """Fold the whole item catalogue (as of now) into the staged nightly build: created
    and changed items are embedded by the new model, retired ones dropped. Returns the
    item count. Entries that arrive later are folded in by publish-version."""
    staging = VersionStore(Layout(Path(stage.root))).staging_path(stage.version_id)
    write_catalogue_state(staging, 0, ())
    changes = open_catalogue(Layout(Path(stage.root))).changes(0)
    applied = apply_changes(staging, changes, recipe=None)
    # Built from the whole catalogue, not on top of its parent: only the entries folded in
    # at publish time count as applied events.
    write_catalogue_state(staging, applied.seq, ())
    logger.info(
        "catalogue up to %d folded in: %d items upserted, %d retired, %d items",
        applied.seq,
        applied.upserted,
        applied.retired,
        applied.n_items,
    )
    return applied.n_items

"""Publishing versions that include the item catalogue: the cold-start sync (CURRENT +
new catalogue entries -> a delta on top of it) and the nightly's catch-up before it
publishes.

Plain functions, no Prefect. The protocol that keeps every acknowledged item served:

- Every version records `catalogue_seq` S in its lineage: it includes every catalogue
  entry up to S (`core.catalogue_apply` applies entries exactly once, in order).
- A sync reads CURRENT P (with S_P) and the log head H; if H > S_P it publishes entries
  (S_P, H] as a delta on top of P (`core.delta_publish`: the changed items embedded by
  the model of P's chain), with a compare-and-swap expecting P. Acknowledged entries are
  <= the head of any later read, so the next successful publish after an ack includes it.
- Lineage is verified: the files a delta derives from (the base's model and item IDs,
  the chain's deltas) are checked first, and a corrupt one fails the sync
  (`CorruptVersionError`) with nothing published. A delta carries no other file, so
  damaged bytes never get fresh checksums. Compaction (`core.compaction`) folds a chain
  into a complete version; the files it takes over unchanged keep their recorded
  checksums (publish reads them back against those).
- The nightly builds from the whole catalogue at its start, then, right before
  publishing, folds in the entries that arrived meanwhile (embedded by its *new* model).
- Publishers hold `Layout.publish_lock` from reading CURRENT to the compare-and-swap, so
  cooperating publishers queue instead of livelocking; the compare-and-swap stays the
  guarantee (a rollback or a stale nightly loses the race and retries on the newer
  state, it never overwrites it).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from core.catalogue_apply import (
    ApplySummary,
    IndexRecipe,
    apply_changes,
    read_catalogue_state,
    write_catalogue_state,
)
from core.delta_publish import publish_delta
from storage import (
    CorruptVersionError,
    Layout,
    NoCurrentVersionError,
    PublishConflictError,
    PublishedVersion,
    VersionFiles,
    VersionStore,
)
from storage.backends import open_catalogue, store_lock
from storage.integrity import FileIdentity, carried_entries, file_identities
from storage.manifest import FileEntry, read_manifest
from storage.settings import DEFAULT_KEEP_ITEM_VERSIONS, DEFAULT_KEEP_VERSIONS

__all__ = [
    "SyncResult",
    "catch_up_and_publish",
    "require_current",
    "stage_child",
    "sync_current",
]

log = logging.getLogger(__name__)

MAX_ATTEMPTS: Final = 20
LOCK_TIMEOUT_S: Final = 600.0


@dataclass(frozen=True)
class SyncResult:
    """CURRENT after a sync; `published` is False when it already held every entry."""

    version_id: str
    published: bool
    seq: int
    applied_events: tuple[str, ...]
    n_items: int
    attempts: int
    removed: tuple[Path, ...] = field(default=())  # leftovers of dead runs cleaned up


def stage_child(
    store: VersionStore, parent: PublishedVersion
) -> tuple[str, Path, dict[str, FileIdentity]]:
    """A staging folder holding `parent`'s files (hard links; copies across devices) and
    its catalogue position; returns (version id, folder, identities of the taken-over
    files, for `carried_entries`). `parent` must have been verified."""
    version_id = store.new_version_id()
    staging = store.begin(version_id, kind="items")
    for name in parent.manifest.files:
        src, dst = parent.path / name, staging / name
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    identities = file_identities(staging, parent.manifest.files)
    seq = parent.manifest.lineage.catalogue_seq or 0
    write_catalogue_state(staging, seq, ())
    return version_id, staging, identities


def sync_current(
    layout: Layout,
    keep_versions: int = DEFAULT_KEEP_VERSIONS,
    keep_item_versions: int = DEFAULT_KEEP_ITEM_VERSIONS,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> SyncResult:
    """Publish every catalogue entry CURRENT lacks as a delta on top of it
    (``core.delta_publish``; a no-op when it lacks none).

    Raises `NoCurrentVersionError` before the first nightly (the entries stay in the
    catalogue and the first nightly includes them), and `CorruptVersionError` when the
    files the delta derives from (the base's model and item IDs, the chain's deltas) do
    not match their manifests (nothing is published; roll back to an intact version or
    run the nightly). Holding the publish lock, it first removes what dead publishers
    left (staging of dead processes, unregistered version folders).
    """
    store = VersionStore(layout, keep_versions, keep_item_versions)
    catalogue = open_catalogue(layout)
    removed: list[Path] = []
    for attempt in range(1, max_attempts + 1):
        with store_lock(layout, "publish", lock_timeout_s):
            removed += store.collect_dead(publish_locked=True)
            parent = require_current(store, verify=False)
            seq = parent.manifest.lineage.catalogue_seq or 0
            changes = catalogue.changes(seq)
            if changes.empty:
                return SyncResult(
                    parent.version_id,
                    False,
                    seq,
                    (),
                    parent.manifest.item_count,
                    attempt,
                    tuple(removed),
                )
            try:
                result = publish_delta(store, parent, changes)
            except PublishConflictError as e:
                # A publisher outside the lock (e.g. a rollback) moved CURRENT: start over
                # from the newer state.
                log.warning("sync attempt %d lost the race: %s", attempt, e)
                continue
            m = result.manifest
            log.info(
                "published %s = %s + catalogue (%d, %d]: %d upserted, %d retired",
                m.version_id,
                parent.version_id,
                seq,
                changes.upto,
                result.upserted,
                result.retired,
            )
            return SyncResult(
                m.version_id,
                True,
                changes.upto,
                m.lineage.applied_events,
                m.item_count,
                attempt,
                tuple(removed),
            )
    raise RuntimeError(f"CURRENT kept moving: no sync after {max_attempts} attempts")


def catch_up_and_publish(
    store: VersionStore,
    version_id: str,
    expected: str | None,
    recipe: IndexRecipe,
    publish: Callable[[str | None, ApplySummary, dict[str, FileEntry]], str],
    *,
    max_attempts: int = MAX_ATTEMPTS,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
) -> str:
    """Fold the catalogue entries that arrived since the staged version read it, then
    `publish(expected, applied, carried)` (a `VersionStore.publish` with
    `keep_staging_on_conflict=True`, returning the version id); on a conflict retry on
    the CURRENT that won. Returns the published id. `carried`: on a retry, the files the
    catch-up did not rewrite, with the checksums the failed attempt recorded (they are
    checked, not re-hashed).

    For builds that do not derive from CURRENT's files (the nightly): the staged version
    is complete on its own, so publishing it over a newer CURRENT loses nothing once it
    includes every entry that CURRENT includes.
    """
    staging = store.staging_path(version_id)
    catalogue = open_catalogue(store.layout)
    with store_lock(store.layout, "publish", lock_timeout_s):
        for attempt in range(1, max_attempts + 1):
            seq, _ = read_catalogue_state(staging)
            recorded = _recorded_entries(store, version_id, staging)
            identities = file_identities(staging, recorded)
            applied = apply_changes(staging, catalogue.changes(seq), recipe)
            carried = carried_entries(staging, recorded, identities)
            try:
                return publish(expected, applied, carried)
            except PublishConflictError as e:
                log.warning(
                    "attempt %d: CURRENT moved from %s to %s while %s was built; "
                    "catching up and publishing over %s",
                    attempt,
                    e.expected,
                    e.actual,
                    version_id,
                    e.actual,
                )
                expected = e.actual
    raise RuntimeError(f"CURRENT kept moving: {version_id} not published in {max_attempts} tries")


def _recorded_entries(store: VersionStore, version_id: str, staging: Path) -> dict[str, FileEntry]:
    """The checksums an earlier publish attempt of this staging folder recorded in its
    manifest (left there when it lost the compare-and-swap); {} on a first attempt."""
    if not (staging / VersionFiles.MANIFEST).is_file():
        return {}
    try:
        return dict(read_manifest(version_id, staging).files)
    except CorruptVersionError:
        return {}  # an unreadable manifest from a crash: hash everything afresh


def require_current(store: VersionStore, *, verify: bool = True) -> PublishedVersion:
    """CURRENT, opened (checksums checked if `verify`: `CorruptVersionError` names the
    first bad file); a clear error before the first nightly."""
    try:
        return store.open_current(verify=verify)
    except NoCurrentVersionError as e:
        raise NoCurrentVersionError(
            f"{e}: new items need a model; run the nightly flow once first"
        ) from None

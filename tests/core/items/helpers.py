"""The new-items path without Prefect: validate, append (acknowledge), sync CURRENT."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from core.catalogue_sync import SyncResult, sync_current
from core.delta_apply import chain_vectors
from core.deltas import resolve_chain
from core.filtering import index_ids
from core.items_validation import validate_retirements, validate_upserts
from core.recall import Recaller
from storage import CatalogueLog, Layout, VersionStore
from tests.core.items.conftest import CONTENT_DIM


def create(layout: Layout, event_id: str, raw: list[object]) -> SyncResult:
    valid = validate_upserts(raw, CONTENT_DIM, 1000)
    CatalogueLog(layout.catalogue_db).append_upserts(event_id, valid.upserts)
    return sync_current(layout)


def retire(layout: Layout, event_id: str, ids: list[int]) -> SyncResult:
    valid = validate_retirements(ids, 1000)
    CatalogueLog(layout.catalogue_db).append_retirements(event_id, valid.retire_ids)
    return sync_current(layout)


def held_ids(recaller: Recaller) -> npt.NDArray[np.int64]:
    ids = index_ids(recaller.index)
    assert ids is not None
    return np.sort(ids)


def top1_for_own_vector(store: VersionStore, recaller: Recaller, item_id: int) -> int:
    """Best match for the item's stored embedding, searched as requests are (tombstones
    filtered): the item itself when it is served exactly once with that vector."""
    chain = resolve_chain(store, store.open_version(recaller.version_id))
    ids, vecs = chain_vectors(chain)  # the base's embeddings with the deltas applied
    vec = np.ascontiguousarray(vecs[np.searchsorted(ids, item_id)][None])
    flt = recaller._catalogue.filter(np.empty(0, np.int64), None, None)
    _, found = recaller._searcher.search(vec, 1, flt)
    return int(found[0])

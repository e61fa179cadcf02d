"""No lost items across a nightly rebuild: producers keep creating (and re-sending, and
updating) items while the nightly trains and publishes; afterwards every acknowledged
item is in the final CURRENT index exactly once, embedded by the new model, retrievable.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.catalogue_sync import sync_current
from core.config import NightlyConfig
from core.delta_apply import chain_vectors
from core.deltas import resolve_chain
from core.filtering import index_ids
from core.recall import Recaller
from flows.nightly import nightly
from model.embed import embed_items
from model.features import category_rows
from storage import ItemUpsert, Layout, VersionStore
from storage.backends import open_catalogue
from storage.database import bind_database
from tests.conftest import Published

pytestmark = pytest.mark.prefect

_KEEP = 10_000  # keep every version, so the test can read the nightly's own manifest


class Producer(threading.Thread):
    """Sends events until stopped: new items, sometimes a resend of its last event or an
    update of an item it created. Records what was acknowledged (append returned)."""

    def __init__(self, layout: Layout, first_id: int, content_dim: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.layout, self.next_id, self.dim = layout, first_id, content_dim
        self.rng = np.random.default_rng(seed)
        self.acked: dict[int, ItemUpsert] = {}  # latest acknowledged state per item
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.n_events = 0

    def _item(self, item_id: int) -> ItemUpsert:
        content = self.rng.normal(size=self.dim).astype(np.float32)
        return ItemUpsert(item_id, int(self.rng.integers(0, 8)), content)

    def run(self) -> None:
        log = open_catalogue(self.layout)
        last: tuple[str, list[ItemUpsert]] | None = None
        try:
            while not self.stop.is_set():
                self.n_events += 1
                if last is not None and self.n_events % 5 == 0:
                    event_id, items = last  # at-least-once: the same event again
                elif self.acked and self.n_events % 7 == 0:
                    old = int(self.rng.choice(sorted(self.acked)))
                    event_id, items = f"{self.name}-{self.n_events}", [self._item(old)]
                else:
                    items = [self._item(self.next_id + j) for j in range(2)]
                    self.next_id += 2
                    event_id = f"{self.name}-{self.n_events}"
                log.append_upserts(event_id, items)  # returns once durable: acknowledged
                if not (last is not None and event_id == last[0]):
                    self.acked |= {it.item_id: it for it in items}
                last = (event_id, items)
                sync_current(self.layout, _KEEP)  # what the event's flow run does next
                time.sleep(0.05)
        except BaseException as e:  # reported by the test
            self.errors.append(e)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_items_created_during_a_rebuild_are_all_served_exactly_once(
    published: Published, tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """On both registries and catalogues: SQLite files in the root, and PostgreSQL."""
    root = tmp_path / "store"
    layout = Layout(root)
    if backend == "sqlite":
        shutil.copytree(published.root, root)
    else:
        bind_database(layout, request.getfixturevalue("pg_url"))
        first = NightlyConfig.model_validate(
            {
                "data": {"scale": "tiny"},
                "train": {"epochs": 1},
                "evaluation": {"gate_min_lift": -1.0, "baseline": "none", "max_users": 100},
                "runtime": {"storage_root": str(root), "keep_versions": _KEEP},
            }
        )
        nightly(first)  # the CURRENT the producers start from
    store = VersionStore(layout, keep_versions=_KEEP)
    before = store.current()
    content_dim = Recaller.load(store).model.spec.content_dim
    producers = [Producer(layout, 10_000_000 * (k + 1), content_dim, seed=k) for k in range(2)]
    for p in producers:
        p.start()
    cfg = NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 1},
            "evaluation": {"gate_min_lift": -1.0, "baseline": "none", "max_users": 100},
            "index": {"tune_queries": 20},
            "runtime": {"storage_root": str(root), "keep_versions": _KEEP},
        }
    )
    try:
        rebuilt = nightly(cfg)
        # A few more events each, on top of the new model.
        targets = [p.n_events + 5 for p in producers]
        deadline = time.monotonic() + 60
        while any(p.n_events < t for p, t in zip(producers, targets, strict=True)):
            assert time.monotonic() < deadline and all(p.is_alive() for p in producers)
            time.sleep(0.05)
    finally:
        for p in producers:
            p.stop.set()
        for p in producers:
            p.join(60)
    errors = [e for p in producers for e in p.errors]
    assert not errors, errors
    acked = {i: it for p in producers for i, it in p.acked.items()}
    assert len(acked) > 10 and sum(p.n_events for p in producers) > 20

    # The nightly lost the compare-and-swap to cold-start versions and retried on them.
    rows = {r.version_id: r for r in store.registry.list_versions()}
    assert rows[rebuilt].parent not in (None, before)
    assert store.open_version(rebuilt).manifest.lineage.applied_events  # folded at publish

    final = store.open_current()
    recaller = Recaller.load(store)  # index == items table, probes
    held = index_ids(recaller.index)
    assert held is not None and len(held) == len(np.unique(held))  # exactly once
    missing = set(acked) - set(held.tolist())
    assert not missing, f"{len(missing)} acknowledged items not served: {sorted(missing)[:10]}"
    # Served vectors come from the rebuilt model (no stale pre-rebuild embeddings) and
    # carry each item's latest acknowledged content.
    # (events after the rebuild are deltas on it: their model is the rebuilt one's.)
    chain = resolve_chain(store, final)
    assert (
        chain.base.manifest.files["model.pt"]
        == store.open_version(rebuilt).manifest.files["model.pt"]
    )
    ids, vectors = chain_vectors(chain)
    want = np.array(sorted(acked), np.int64)
    pos = np.searchsorted(ids, want)
    expected = embed_items(
        recaller.model,
        np.zeros(len(want), np.int64),
        category_rows([acked[i].category for i in want], recaller.model.spec.n_categories),
        np.stack([acked[i].content for i in want]),
    )
    np.testing.assert_allclose(vectors[pos], expected, atol=1e-5)
    for item_id in want[:: max(1, len(want) // 20)]:
        vec = vectors[np.searchsorted(ids, item_id)][None]
        flt = recaller._catalogue.filter(np.empty(0, np.int64), None, None)
        assert int(recaller._searcher.search(vec, 1, flt)[1][0]) == item_id

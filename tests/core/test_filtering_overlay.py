"""Search over an index with an overlay (``model.incremental.Overlay``) is exact: with
tombstones blocked, stale vectors blocked and fresh vectors scanned beside the index, every
request (seen items, category allow- and deny-lists, both filter representations, every
filter mode) returns what a brute-force top-k over the items' current vectors returns."""

from __future__ import annotations

import logging

import faiss
import numpy as np
import pytest

from core.filtering import EMPTY_IDS, FilteredSearch, FilterMode, ItemCatalogue
from model.index import build_index

D, N, CATS = 8, 400, 6


def _world(
    seed: int, id_scale: int, factory: str = "Flat"
) -> tuple[ItemCatalogue, FilteredSearch, dict[str, object]]:
    """An index over N items (IDs ``id_scale`` apart) of which 40 were updated (fresh
    vectors) and 30 others retired (tombstones). A refined IVF-PQ visits every list and
    re-ranks every candidate exactly, so it answers exactly too."""
    rng = np.random.default_rng(seed)
    ids = np.arange(N, dtype=np.int64) * id_scale + 3
    vecs = rng.normal(size=(N, D)).astype(np.float32)
    index = build_index(vecs, ids, factory)
    if factory != "Flat":
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = ivf.nlist
        faiss.downcast_index(index.index).k_factor = float(N)
    fresh_ids = np.sort(rng.choice(ids, 40, replace=False))
    rest = np.setdiff1d(ids, fresh_ids)
    tombstones = np.sort(rng.choice(rest, 30, replace=False))
    fresh_vecs = rng.normal(size=(40, D)).astype(np.float32)
    live = np.setdiff1d(ids, tombstones)
    category = rng.integers(0, CATS, N).astype(np.int32)
    live_cat = category[np.searchsorted(ids, live)]
    current = vecs[np.searchsorted(ids, live)].copy()
    current[np.searchsorted(live, fresh_ids)] = fresh_vecs
    catalogue = ItemCatalogue(live, live_cat, tombstones, fresh_ids)
    truth = {"ids": live, "cat": live_cat, "vecs": current}
    return catalogue, FilteredSearch(index, "auto", fresh_vecs, fresh_ids), truth


def _brute(
    truth: dict[str, object], q: np.ndarray, k: int, seen: np.ndarray, include, exclude
) -> tuple[np.ndarray, np.ndarray]:
    ids, cat, vecs = truth["ids"], truth["cat"], truth["vecs"]
    ok = ~np.isin(ids, seen)  # type: ignore[arg-type]
    if include is not None:
        ok &= np.isin(cat, sorted(set(include) - set(exclude or ())))  # type: ignore[arg-type]
    elif exclude:
        ok &= ~np.isin(cat, exclude)  # type: ignore[arg-type]
    scores = vecs @ q  # type: ignore[operator]
    rows = np.flatnonzero(ok)
    rows = rows[np.argsort(-scores[rows], kind="stable")][:k]
    return scores[rows], ids[rows]  # type: ignore[index]


@pytest.mark.parametrize("mode", ["auto", "selector", "overfetch"])
@pytest.mark.parametrize("id_scale", [1, 1 << 20], ids=["bitmap", "sorted-ids"])
@pytest.mark.parametrize("factory", ["Flat", "IVF4,PQ4x4,RFlat"])
def test_overlay_search_equals_brute_force_on_current_vectors(
    mode: FilterMode, id_scale: int, factory: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="core.filtering")
    catalogue, searcher, truth = _world(3, id_scale, factory)
    searcher = FilteredSearch(searcher.index, mode, searcher.fresh_vectors, searcher.fresh_ids)
    rng = np.random.default_rng(11)
    live = truth["ids"]
    for trial in range(120):
        q = rng.normal(size=D).astype(np.float32)
        n_seen = int(rng.choice([0, 3, 300]))
        seen = np.unique(rng.choice(live, n_seen)) if n_seen else EMPTY_IDS  # type: ignore[arg-type]
        include = (
            sorted(rng.choice(CATS, int(rng.integers(1, 3)), replace=False).tolist())
            if trial % 3 == 1
            else None
        )
        exclude = [int(rng.integers(0, CATS))] if trial % 3 == 2 else None
        k = int(rng.choice([1, 10, 50]))
        flt = catalogue.filter(seen, include, exclude)
        assert flt is not None  # an overlay always needs one
        want_scores, want_ids = _brute(truth, q, k, seen, include, exclude)
        k_eff = min(k, flt.total)
        assert k_eff == len(want_ids), f"trial {trial}: {flt.total} eligible"
        if not k_eff:
            continue
        scores, ids = searcher.search(q[None], k_eff, flt)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        assert ids.tolist() == want_ids.tolist(), f"trial {trial}"
    # Every index here takes a search-time selector (a refined index used to refuse one).
    assert "takes no search-time selector" not in caplog.text


def test_fresh_items_alone_can_answer() -> None:
    """A request whose only eligible items are fresh ones (the index's part empty)."""
    catalogue, searcher, truth = _world(5, 1)
    fresh = catalogue.fresh_ids
    blocked = np.setdiff1d(truth["ids"], fresh)  # type: ignore[arg-type]
    flt = catalogue.filter(blocked, None, None)
    assert flt is not None and flt.eligible == 0 and flt.total == len(fresh)
    scores, ids = searcher.search(np.ones((1, D), np.float32), 5, flt)
    assert len(ids) == 5 and set(ids.tolist()) <= set(fresh.tolist())
    assert all(scores[:-1] >= scores[1:])

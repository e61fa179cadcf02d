"""``model.index_merge``: an index filled in parts and merged is the index one process
builds (the same bytes), for every mergeable kind; what cannot be merged is refused."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from model.index import build_index, fill_index, finish_index, trained_index
from model.index_merge import can_merge, merge_parts

N, D = 6000, 16


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    ids = rng.permutation(10 * N)[:N].astype(np.int64)  # arbitrary, unsorted IDs
    return x, ids


@pytest.mark.parametrize(
    "factory", ["IVF16,Flat", "IVF16,PQ8", "IVF16,SQ8", "IVF16,PQ8,RFlat", "Flat"]
)
def test_parts_merged_in_order_are_the_one_process_index(factory: str) -> None:
    x, ids = _data()
    whole = build_index(x, ids, factory, train_sample=4000, seed=3)
    template = trained_index(x, factory, train_sample=4000, seed=3)
    assert can_merge(template)
    parts = []
    for lo, hi in [(0, 1000), (1000, 1001), (1001, 4500), (4500, N)]:  # uneven, one of 1 row
        part = faiss.clone_index(template)
        fill_index(part, x[lo:hi], ids[lo:hi])
        parts.append(part)
    merged = merge_parts(template, parts)
    finish_index(merged)
    assert merged.ntotal == N and template.ntotal == 0
    assert np.array_equal(faiss.serialize_index(merged), faiss.serialize_index(whole))
    _, found = merged.search(x[:20], 5)
    assert set(found[:, 0]) <= set(ids.tolist())


def test_parts_in_another_order_are_another_index() -> None:
    """The merge keeps the parts' order; a different order gives different list contents
    (so an equal-bytes check above is not vacuous)."""
    x, ids = _data()
    template = trained_index(x, "IVF16,Flat", train_sample=4000, seed=3)
    parts = []
    for lo, hi in [(0, 3000), (3000, N)]:
        part = faiss.clone_index(template)
        fill_index(part, x[lo:hi], ids[lo:hi])
        parts.append(part)
    forward = merge_parts(template, [faiss.clone_index(p) for p in parts])
    backward = merge_parts(template, parts[::-1])
    assert forward.ntotal == backward.ntotal == N
    assert not np.array_equal(faiss.serialize_index(forward), faiss.serialize_index(backward))


def test_what_cannot_be_merged_is_refused() -> None:
    x, ids = _data()
    hnsw = trained_index(x, "HNSW8")
    assert not can_merge(hnsw)
    with pytest.raises(ValueError, match="cannot be merged"):
        merge_parts(hnsw, [])
    template = trained_index(x, "IVF16,Flat", train_sample=4000)
    full = faiss.clone_index(template)
    fill_index(full, x[:10], ids[:10])
    with pytest.raises(ValueError, match="template must be empty, it holds 10"):
        merge_parts(full, [])
    other = trained_index(x, "IVF16,Flat", train_sample=4000, seed=9)  # other centroids
    fill_index(other, x[:10], ids[:10])
    with pytest.raises(ValueError, match="part 0 does not match the template"):
        merge_parts(template, [other])
    flat = trained_index(x, "Flat")
    with pytest.raises(ValueError, match="part 0 is a IndexIDMap2"):
        merge_parts(template, [flat])

"""The per-request fast paths of ``Recaller.recall`` answer exactly what the general
paths answer: user rows wrapped without copies (read-only tables too), no filter object
for plain requests, Faiss's -1 padding dropped, seen items checked by direct lookup."""

from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pytest
import torch

from core.filtering import EMPTY_IDS, FilteredSearch, ItemCatalogue
from core.recall import InvalidRequestError, Recaller
from model.embed import embed_items
from model.train import init_model
from storage import Layout, VersionStore
from tests.conftest import Published

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def recaller(published: Published) -> Recaller:
    return Recaller.load(VersionStore(Layout(published.root)))


def _floor(r: Recaller, pos: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Bare user tower + bare index.search for the user at table row ``pos``."""
    with torch.inference_mode():
        vec = r.model.forward_user(
            torch.tensor([int(r.tables.user_id_row[pos])]),
            torch.from_numpy(r.tables.profile[pos : pos + 1].copy()),
        ).numpy()
    scores, ids = r.index.search(vec, k)
    return scores[0], ids[0]


def test_plain_recall_is_the_bare_tower_and_search(recaller: Recaller) -> None:
    for pos in range(0, len(recaller.tables.user_id), 37):
        got = recaller.recall(int(recaller.tables.user_id[pos]), k=20, exclude_seen=False)
        scores, ids = _floor(recaller, pos, 20)
        np.testing.assert_array_equal(got.item_ids, ids)
        np.testing.assert_array_equal(got.scores, scores)
        assert got.known_user
        np.testing.assert_array_equal(
            got.categories,
            recaller.tables.category[np.searchsorted(recaller.tables.item_id, ids)],
        )


def test_numpy_integer_ids_and_k_take_the_same_path(recaller: Recaller) -> None:
    user = recaller.tables.user_id[5]
    a = recaller.recall(int(user), k=7)
    b = recaller.recall(user, k=np.int32(7))
    np.testing.assert_array_equal(a.item_ids, b.item_ids)


def test_read_only_tables_are_served_without_warnings(recaller: Recaller) -> None:
    # pytest turns warnings into errors: torch warns when it wraps a read-only array.
    profile = recaller.tables.profile.copy()
    rows = recaller.tables.user_id_row.copy()
    profile.flags.writeable = rows.flags.writeable = False
    tables = dataclasses.replace(recaller.tables, profile=profile, user_id_row=rows)
    frozen = dataclasses.replace(recaller, tables=tables)
    user = int(recaller.tables.user_id[3])
    np.testing.assert_array_equal(
        frozen.recall(user, k=10).item_ids, recaller.recall(user, k=10).item_ids
    )
    assert not profile.flags.writeable  # the caller's arrays are left as they were


def test_live_profile_and_anonymous_requests_leave_the_tables_alone(recaller: Recaller) -> None:
    before = recaller.tables.profile.copy()
    user = int(recaller.tables.user_id[2])
    live = [9.0, -9.0, 0.5, 1.0]
    recaller.recall(user, live, k=5)
    recaller.recall(None, live, k=5)
    recaller.recall(user, k=5)
    np.testing.assert_array_equal(recaller.tables.profile, before)


def test_missing_results_are_dropped_not_returned_as_minus_one() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((200, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    quantizer = faiss.IndexFlatIP(8)
    index = faiss.IndexIVFFlat(quantizer, 8, 16, faiss.METRIC_INNER_PRODUCT)
    index.train(vecs)
    index.add_with_ids(vecs, np.arange(1000, 1200, dtype=np.int64))
    index.nprobe = 1  # one list holds far fewer than 150 vectors
    scores, ids = FilteredSearch(index).search(vecs[:1], 150, None)
    raw_scores, raw_ids = index.search(vecs[:1], 150)
    assert (raw_ids[0] < 0).any() and len(ids) == (raw_ids[0] >= 0).sum()
    np.testing.assert_array_equal(ids, raw_ids[0][raw_ids[0] >= 0])
    np.testing.assert_array_equal(scores, raw_scores[0][raw_ids[0] >= 0])


def _catalogue(bound: int) -> ItemCatalogue:
    ids = np.array([2, 5, 7, 11, bound - 1], np.int64)
    return ItemCatalogue(ids, np.array([0, 1, 0, 2, 1], np.int32), np.array([3, 9], np.int64))


@pytest.mark.parametrize("bound", [20, 1 << 27], ids=["lookup-table", "binary-search"])
def test_holds_is_membership_of_carried_items(bound: int) -> None:
    cat = _catalogue(bound)
    probe = np.array([-5, 0, 2, 3, 5, 9, 11, 12, bound - 1, bound, 1 << 40], np.int64)
    np.testing.assert_array_equal(cat.holds(probe), np.isin(probe, cat.item_id))
    assert cat.holds(np.array([3, 9], np.int64)).sum() == 0  # tombstones are not carried


@pytest.mark.parametrize("bound", [20, 1 << 27], ids=["lookup-table", "binary-search"])
def test_unsorted_repeated_history_filters_like_a_sorted_one(bound: int) -> None:
    cat = _catalogue(bound)
    messy = np.array([11, 2, 4, 11, 2, 40], np.int64)  # 4 and 40: not carried
    clean = np.array([2, 11], np.int64)
    for include, exclude in [(None, None), (None, [1]), ([0, 2], None), ([0, 1], [1])]:
        a, b = cat.filter(messy, include, exclude), cat.filter(clean, include, exclude)
        assert a is not None and b is not None
        assert (a.allow, a.eligible) == (b.allow, b.eligible)
        np.testing.assert_array_equal(a.ids, b.ids)


def test_no_filter_object_for_plain_requests_only() -> None:
    plain = ItemCatalogue(np.array([1, 2, 3], np.int64), np.array([0, 0, 1], np.int32))
    assert plain.filter(EMPTY_IDS, None, None) is None
    assert plain.filter(EMPTY_IDS, None, []) is None
    flt = plain.filter(EMPTY_IDS, [], None)  # an empty allow-list allows nothing
    assert flt is not None and flt.eligible == 0
    tomb = _catalogue(20)
    flt = tomb.filter(EMPTY_IDS, None, None)  # tombstones are always blocked
    assert flt is not None and set(flt.ids.tolist()) == {3, 9}


def test_embed_items_returns_a_writable_array_equal_to_a_plain_forward(
    recaller: Recaller,
) -> None:
    model, t = recaller.model, recaller.tables
    cats = t.item_category_rows(model.spec.n_categories)
    vecs = embed_items(model, t.item_id_row, cats, t.content, batch_size=64)
    with torch.inference_mode():
        plain = model.forward_item(
            torch.from_numpy(t.item_id_row), torch.from_numpy(cats), torch.from_numpy(t.content)
        ).numpy()
    assert vecs.shape == plain.shape and vecs.dtype == np.float32
    assert vecs.flags.writeable and vecs.flags.c_contiguous
    np.testing.assert_allclose(vecs, plain, rtol=0, atol=1e-6)


def test_a_model_with_the_item_bias_slot_serves_cosine_plus_offset(recaller: Recaller) -> None:
    """User vectors of a bias-slot model have |v|^2 = 2: the overflow guard must accept them
    (and still reject an overflowing profile), and recall ranks by cosine + item offset."""
    spec = recaller.model.spec
    biased_spec = spec.model_copy(
        update={"tower": spec.tower.model_copy(update={"item_bias": True})}
    )
    model = init_model(biased_spec, 5).eval()
    with torch.no_grad():
        model.item_tower.mlp[-1].bias[-1] = 0.4  # offsets away from 0 so they matter
    t = recaller.tables
    vecs = embed_items(model, t.item_id_row, t.item_category_rows(spec.n_categories), t.content)
    index = faiss.IndexIDMap(faiss.IndexFlatIP(vecs.shape[1]))
    index.add_with_ids(vecs, t.item_id)
    served = dataclasses.replace(recaller, model=model, index=index)
    assert model.user_norm_sq == 2.0
    for pos in range(0, len(t.user_id), 41):
        got = served.recall(int(t.user_id[pos]), k=15, exclude_seen=False)
        scores, ids = _floor(served, pos, 15)
        np.testing.assert_array_equal(got.item_ids, ids)
        np.testing.assert_array_equal(got.scores, scores)
        # The score is the cosine of the unit parts plus the item's offset.
        with torch.inference_mode():
            user = model.forward_user(
                torch.tensor([int(t.user_id_row[pos])]), torch.from_numpy(t.profile[pos : pos + 1])
            ).numpy()[0]
        items = vecs[np.searchsorted(t.item_id, ids)]
        np.testing.assert_allclose(
            got.scores, items[:, :-1] @ user[:-1] + items[:, -1], rtol=1e-5, atol=1e-5
        )
    with pytest.raises(InvalidRequestError, match="out of range"):
        served.recall(None, [3e38] * spec.profile_dim, k=5)

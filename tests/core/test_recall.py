"""The recall core against exact search on the session's tiny published version: seen-item
exclusion and category filters are exact in every filter mode and on IVF, users are
embedded as documented, bad requests raise typed errors, bad versions are rejected."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pytest
import torch

from core.recall import (
    FilterMode,
    InvalidRequestError,
    Recaller,
    UnknownUserError,
    VersionRejectedError,
)
from core.versionio import read_embeddings
from model.index import build_index
from storage import CorruptVersionError, Layout, VersionFiles, VersionStore
from tests.conftest import Published

pytestmark = pytest.mark.prefect

MODES: tuple[FilterMode, ...] = ("auto", "selector", "overfetch")


@pytest.fixture(scope="module")
def recaller(published: Published) -> Recaller:
    return Recaller.load(VersionStore(Layout(published.root)))


@pytest.fixture(scope="module")
def item_vectors(published: Published) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    return read_embeddings(VersionStore(Layout(published.root)).open_current().path)


def _user_vector(r: Recaller, id_row: int, profile: npt.NDArray[np.float32]) -> np.ndarray:
    with torch.inference_mode():
        return r.model.forward_user(
            torch.tensor([id_row]), torch.from_numpy(profile.reshape(1, -1).copy())
        ).numpy()[0]


def _exact(
    r: Recaller,
    vectors: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]],
    user_id: int,
    k: int,
    exclude_seen: bool = True,
    include: list[int] | None = None,
    exclude: list[int] | None = None,
) -> list[int]:
    """Brute-force top-k eligible item IDs for a known user."""
    ids, vecs = vectors
    pos = int(np.searchsorted(r.tables.user_id, user_id))
    scores = vecs @ _user_vector(r, int(r.tables.user_id_row[pos]), r.tables.profile[pos])
    cats = r.tables.category[np.searchsorted(r.tables.item_id, ids)]
    ok = np.ones(len(ids), bool)
    if exclude_seen:
        ok &= ~np.isin(ids, r.history.items_of(user_id))
    if include is not None:
        ok &= np.isin(cats, include)
    if exclude is not None:
        ok &= ~np.isin(cats, exclude)
    order = np.argsort(-scores[ok], kind="stable")[:k]
    return [int(i) for i in ids[ok][order]]


FILTERS: list[dict[str, Any]] = [
    {},
    {"exclude_seen": False},
    {"exclude_categories": [0, 1]},
    {"include_categories": [2]},
    {"include_categories": [2, 3, 4, 5], "exclude_categories": [3]},
    {"exclude_seen": False, "include_categories": [7]},
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "seen")
def test_recall_equals_exact_search_over_the_eligible_items(
    recaller: Recaller, item_vectors: Any, mode: FilterMode, filters: dict[str, Any]
) -> None:
    r = dataclasses.replace(recaller, filter_mode=mode)
    include, exclude = filters.get("include_categories"), filters.get("exclude_categories")
    for user in recaller.tables.user_id[::40].tolist():
        got = r.recall(user, k=30, **filters)
        expected = _exact(
            r, item_vectors, user, 30, filters.get("exclude_seen", True), include, exclude
        )
        # Ties in float32 scores may swap neighbours; the sets and the order of scores hold.
        assert len(got.items) == len(expected) == 30
        assert [x.item_id for x in got.items][:10] == expected[:10]
        assert len({x.item_id for x in got.items} ^ set(expected)) <= 2
        assert [x.score for x in got.items] == sorted((x.score for x in got.items), reverse=True)
        assert got.version_id == recaller.version_id and got.known_user


@pytest.mark.parametrize("mode", MODES)
def test_seen_items_are_never_returned_and_k_items_still_are(
    recaller: Recaller, mode: FilterMode
) -> None:
    r = dataclasses.replace(recaller, filter_mode=mode)
    for user in recaller.tables.user_id.tolist():
        seen = set(recaller.history.items_of(user).tolist())
        got = [x.item_id for x in r.recall(user, k=100).items]
        assert len(got) == 100 and not seen & set(got), user


def test_seen_items_come_back_without_exclusion(recaller: Recaller) -> None:
    # Users' own items score high (the model learnt from them): most users see some in
    # their unfiltered top 20.
    hits = 0
    for user in recaller.tables.user_id.tolist():
        seen = set(recaller.history.items_of(user).tolist())
        got = {x.item_id for x in recaller.recall(user, k=20, exclude_seen=False).items}
        hits += bool(seen & got)
    assert hits > len(recaller.tables.user_id) // 2


def test_category_filters_are_respected_with_k_items(recaller: Recaller) -> None:
    cats = sorted(set(recaller.tables.category.tolist()))
    for user in recaller.tables.user_id[:50].tolist():
        only = recaller.recall(user, k=40, include_categories=[cats[0], cats[1]]).items
        assert len(only) == 40 and {x.category for x in only} <= {cats[0], cats[1]}
        without = recaller.recall(user, k=40, exclude_categories=cats[:-2]).items
        assert len(without) == 40 and {x.category for x in without} <= set(cats[-2:])


def test_fewer_items_only_when_fewer_are_eligible(recaller: Recaller) -> None:
    cat = int(recaller.tables.category[0])
    user = int(recaller.tables.user_id[0])
    in_cat = set(recaller.tables.item_id[recaller.tables.category == cat].tolist())
    eligible = in_cat - set(recaller.history.items_of(user).tolist())
    got = recaller.recall(user, k=len(in_cat), include_categories=[cat]).items
    assert {x.item_id for x in got} == eligible
    assert (
        recaller.recall(user, k=5, include_categories=[cat], exclude_categories=[cat]).items == []
    )
    assert recaller.recall(user, k=5, include_categories=[10**6]).items == []


def test_unknown_user_is_embedded_through_row_zero_from_the_profile(
    recaller: Recaller, item_vectors: Any
) -> None:
    profile = recaller.tables.profile[3].copy()
    ids, vecs = item_vectors
    expected = ids[np.argsort(-(vecs @ _user_vector(recaller, 0, profile)))[:10]].tolist()
    for user_id in (None, 10**12):
        got = recaller.recall(user_id, profile, k=10)
        assert not got.known_user
        assert [x.item_id for x in got.items] == expected
    # A known user with a live profile keeps the user's own ID row.
    user = int(recaller.tables.user_id[3])
    live = recaller.recall(user, profile, k=10, exclude_seen=False)
    stored = recaller.recall(user, k=10, exclude_seen=False)
    assert live.known_user and [x.item_id for x in live.items] == [x.item_id for x in stored.items]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"user_id": 987654321}, UnknownUserError, "not in version"),
        ({"user_id": None}, InvalidRequestError, "user_id, a profile"),
        ({"user_id": 1, "k": 0}, InvalidRequestError, "k must be in 1..600"),
        ({"user_id": 1, "k": 601}, InvalidRequestError, "catalogue"),
        ({"user_id": 1, "k": True}, InvalidRequestError, "integer"),
        ({"user_id": "1"}, InvalidRequestError, "integer"),
        ({"user_id": None, "profile": [1.0, 2.0]}, InvalidRequestError, "4 values"),
        ({"user_id": None, "profile": [[1.0] * 4]}, InvalidRequestError, "4 values"),
        ({"user_id": None, "profile": ["a"] * 4}, InvalidRequestError, "numbers"),
        ({"user_id": 1, "profile": [float("nan")] * 4}, InvalidRequestError, "finite"),
        ({"user_id": 1, "profile": [1e300] * 4}, InvalidRequestError, "finite"),
        ({"user_id": 1, "profile": [3e38] * 4}, InvalidRequestError, "out of range"),
    ],
)
def test_bad_requests_raise_typed_errors(
    recaller: Recaller, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        recaller.recall(**{"k": 5, **kwargs})


def test_recommend_keeps_the_cli_behaviour(recaller: Recaller) -> None:
    user = int(recaller.tables.user_id[0])
    recs = recaller.recommend(user, 10)
    assert recs == recaller.recall(user, k=10, exclude_seen=False).items
    assert len(recaller.recommend(user, 10_000)) == recaller.n_items
    with pytest.raises(UnknownUserError, match="user 987654321 is not in version"):
        recaller.recommend(987654321, 5)


@pytest.mark.parametrize("mode", MODES)
def test_filters_are_exact_on_an_ivf_index(
    recaller: Recaller, item_vectors: Any, mode: FilterMode
) -> None:
    ids, vecs = item_vectors
    index = build_index(vecs, ids, "IVF16,Flat")
    faiss.extract_index_ivf(index).nprobe = 1  # few lists: filters must still fill k
    r = dataclasses.replace(recaller, index=index, filter_mode=mode)
    r.check()
    cat = int(recaller.tables.category[0])
    for user in recaller.tables.user_id[::20].tolist():
        seen = set(recaller.history.items_of(user).tolist())
        got = r.recall(user, k=50, include_categories=[cat]).items
        assert len(got) == min(
            50,
            int((recaller.tables.category == cat).sum())
            - len(seen & set(recaller.tables.item_id[recaller.tables.category == cat].tolist())),
        )
        assert all(x.category == cat and x.item_id not in seen for x in got)
        unfiltered = r.recall(user, k=100).items
        assert len(unfiltered) == 100 and not seen & {x.item_id for x in unfiltered}


def test_check_rejects_an_index_that_does_not_fit(recaller: Recaller, item_vectors: Any) -> None:
    ids, vecs = item_vectors
    fewer = build_index(vecs[:-10], ids[:-10])
    with pytest.raises(VersionRejectedError, match="index ntotal 590 != 600 items"):
        dataclasses.replace(recaller, index=fewer).check()
    narrow = vecs[:, :32] / np.linalg.norm(vecs[:, :32], axis=1, keepdims=True)
    with pytest.raises(VersionRejectedError, match="index dim 32 != model embedding dim 64"):
        dataclasses.replace(recaller, index=build_index(narrow, ids)).check()
    other_ids = build_index(vecs, ids + 1)
    with pytest.raises(VersionRejectedError, match="item IDs differ"):
        dataclasses.replace(recaller, index=other_ids).check()


def test_load_verifies_checksums(published: Published, tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(published.root, root)
    store = VersionStore(Layout(root))
    path = store.layout.version_dir(published.version_id) / VersionFiles.HISTORY
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptVersionError, match=r"history\.parquet"):
        Recaller.load(store)

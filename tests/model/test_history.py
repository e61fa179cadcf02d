"""Recent-item histories: hand-made cases, and a brute-force reference on random data that
proves no example ever sees its own interaction or anything at or after its time."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from model.history import (
    RaggedRows,
    history_at_end,
    history_before,
    latest_items,
    user_time_order,
)


def _brute_before(
    user: npt.NDArray[np.int64],
    item: npt.NDArray[np.int64],
    ts: npt.NDArray[np.int64],
    train: npt.NDArray[np.bool_],
    n_last: int,
) -> npt.NDArray[np.int64]:
    """The documented rule, one example at a time: same user, in train, strictly earlier
    timestamp; most recent first, equal times by later input index first."""
    rows = []
    for e in np.flatnonzero(train):
        cand = np.flatnonzero(train & (user == user[e]) & (ts < ts[e]))
        cand = cand[np.lexsort((-cand, -ts[cand]))][:n_last]
        rows.append(np.r_[item[cand], np.full(n_last - len(cand), -1)])
    return np.array(rows, np.int64).reshape(-1, n_last)


def test_history_before_by_hand() -> None:
    # user 0: items 10@t1, 11@t2, 12@t2 (same second), 13@t3; user 1: 20@t1, 21@t5.
    # Row 5 (user 0, item 14@t4) is not training: it is neither an example nor history.
    user = np.array([0, 1, 0, 0, 1, 0, 0], np.int64)
    item = np.array([11, 20, 10, 13, 21, 14, 12], np.int64)
    ts = np.array([2, 1, 1, 3, 5, 4, 2], np.int64)
    train = np.array([True, True, True, True, True, False, True])
    got = history_before(user, item, ts, train, n_last=3)
    expected = [
        [10, -1, -1],  # 11@t2: only 10@t1 is earlier (12 shares its second)
        [-1, -1, -1],  # 20: user 1's first
        [-1, -1, -1],  # 10: user 0's first
        [12, 11, 10],  # 13@t3: the t2 pair, later input index (12) first, then 10
        [20, -1, -1],  # 21@t5
        [10, -1, -1],  # 12@t2: like 11
    ]
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.int64
    # Truncation keeps the most recent.
    np.testing.assert_array_equal(history_before(user, item, ts, train, n_last=1)[3], [12])


def test_history_before_matches_brute_force_and_never_looks_ahead() -> None:
    rng = np.random.default_rng(0)
    n = 3_000
    user = rng.integers(0, 60, n).astype(np.int64)
    ts = rng.integers(0, 40, n).astype(np.int64)  # heavy ties
    item = np.arange(n, dtype=np.int64)  # item = interaction index: instances identifiable
    train = rng.random(n) < 0.8
    for n_last in (1, 5, 40):
        got = history_before(user, item, ts, train, n_last)
        np.testing.assert_array_equal(got, _brute_before(user, item, ts, train, n_last))
    examples = np.flatnonzero(train)
    got = history_before(user, item, ts, train, 40)
    filled = got >= 0
    owner = np.broadcast_to(examples[:, None], got.shape)[filled]
    seen = got[filled]
    assert np.all(ts[seen] < ts[owner])  # strictly earlier: never itself, never after
    assert np.all(user[seen] == user[owner]) and np.all(train[seen])
    # Padding only trails.
    assert not np.any(~filled[:, :-1] & filled[:, 1:])


def test_history_before_of_no_training_rows() -> None:
    got = history_before(*(np.zeros(3, np.int64),) * 3, np.zeros(3, bool), n_last=4)
    assert got.shape == (0, 4) and got.dtype == np.int64


def test_history_at_end_by_hand() -> None:
    user = np.array([2, 0, 2, 2, 0, 2], np.int64)
    item = np.array([5, 7, 6, 8, 9, 4], np.int64)
    ts = np.array([10, 3, 30, 20, 1, 30], np.int64)
    mask = np.array([True, True, True, True, False, True])
    got = history_at_end(user, item, ts, mask, n_last=3, n_users=4)
    # user 0: only 7 (9 is masked out); user 1, 3: none;
    # user 2: 6@30 and 4@30 tie -> later input index (4) first, then 6, then 8@20.
    np.testing.assert_array_equal(got, [[7, -1, -1], [-1] * 3, [4, 6, 8], [-1] * 3])
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        history_at_end(user, item, ts, mask, n_last=3, n_users=2)


def test_history_at_end_is_what_the_next_interaction_would_see() -> None:
    rng = np.random.default_rng(1)
    n, n_users = 2_000, 50
    user = rng.integers(0, n_users, n).astype(np.int64)
    item = rng.integers(0, 300, n).astype(np.int64)
    ts = rng.integers(0, 100, n).astype(np.int64)
    mask = rng.random(n) < 0.7
    # One extra interaction per user after everything: its history_before is the end state.
    u2 = np.r_[user, np.arange(n_users)]
    i2 = np.r_[item, np.zeros(n_users, np.int64)]
    t2 = np.r_[ts, np.full(n_users, 1_000)]
    m2 = np.r_[mask, np.ones(n_users, bool)]
    before = history_before(u2, i2, t2, m2, n_last=6)[-n_users:]
    np.testing.assert_array_equal(history_at_end(user, item, ts, mask, 6, n_users), before)


def test_latest_items_are_history_at_end_without_the_padding() -> None:
    rng = np.random.default_rng(3)
    n, n_users = 3_000, 40
    user = rng.integers(0, n_users, n).astype(np.int64)
    item = rng.integers(0, 500, n).astype(np.int64)
    ts = rng.integers(0, 50, n).astype(np.int64)
    mask = rng.random(n) < 0.8
    for n_last in (1, 7, 200):
        ragged = latest_items(user, item, ts, mask, n_last, n_users)
        dense = history_at_end(user, item, ts, mask, n_last, n_users)
        assert len(ragged) == n_users
        np.testing.assert_array_equal(ragged.lengths(), (dense >= 0).sum(axis=1))
        for u in range(n_users):
            np.testing.assert_array_equal(ragged.row(u), dense[u][dense[u] >= 0])
    # 200 is above every user's count: a row holds all of the user's masked items.
    assert ragged.lengths().sum() == mask.sum()


def test_ragged_rows_dense_pads_cuts_and_reads_missing_rows_as_empty() -> None:
    rows = RaggedRows(np.array([0, 3, 3, 4]), np.array([5, 6, 7, 9]))
    assert len(rows) == 3
    np.testing.assert_array_equal(rows.lengths(), [3, 0, 1])
    np.testing.assert_array_equal(rows.row(0), [5, 6, 7])
    assert rows.row(1).size == 0
    got = rows.dense(np.array([2, -1, 0, 1]), pad=0)
    np.testing.assert_array_equal(got, [[9, 0, 0], [0, 0, 0], [5, 6, 7], [0, 0, 0]])
    np.testing.assert_array_equal(rows.dense(np.array([0, 2]), pad=-1, width=2), [[5, 6], [9, -1]])
    # Nothing to hold still gives a batch the towers take: one padding column.
    np.testing.assert_array_equal(rows.dense(np.array([1, -1]), pad=0), [[0], [0]])
    assert rows.dense(np.zeros(0, np.int64), pad=0).shape == (0, 1)


@pytest.mark.parametrize(
    ("indptr", "values"),
    [([1, 2], [0]), ([0, 2, 1], [0, 0]), ([0, 2], [0]), ([], [])],
)
def test_ragged_rows_refuse_inconsistent_offsets(indptr: list[int], values: list[int]) -> None:
    with pytest.raises(ValueError, match=r"indptr|values"):
        RaggedRows(np.array(indptr, np.int64), np.array(values, np.int64))


def test_user_time_order_key_and_lexsort_paths_agree() -> None:
    rng = np.random.default_rng(2)
    user = rng.integers(0, 5, 500).astype(np.int64)
    ts = rng.integers(0, 10, 500).astype(np.int64)
    np.testing.assert_array_equal(user_time_order(user, ts), np.lexsort((ts, user)))
    wide = ts * 2**59 - 2**61  # span ~2^62: too wide for one int64 key
    np.testing.assert_array_equal(user_time_order(user, wide), np.lexsort((wide, user)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_last": 0}, "n_last"),
        ({"train_mask": np.ones(3, np.int64)}, "boolean"),
        ({"ts": np.zeros(2, np.int64)}, "equally long"),
        ({"ts": np.zeros(3)}, "integers"),
    ],
)
def test_history_before_rejects_bad_input(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "user": np.zeros(3, np.int64),
        "item": np.zeros(3, np.int64),
        "ts": np.zeros(3, np.int64),
        "train_mask": np.ones(3, bool),
        "n_last": 2,
    }
    with pytest.raises(ValueError, match=message):
        history_before(**(args | kwargs))  # type: ignore[arg-type]

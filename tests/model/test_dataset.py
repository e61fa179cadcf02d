"""Dataset, evaluation splits, vocabulary and feature tables: positions vs ID rows on small
hand-made cases with non-contiguous, unsorted IDs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.dataset import (
    Dataset,
    Split,
    SplitProtocol,
    Vocabulary,
    leave_one_out_split,
    make_split,
    random_ratio_split,
    temporal_split,
)
from model.features import FeatureTables, IdVocab, category_rows
from tests.model.worlds import tiny_dataset


def _hand_dataset(inter_user: list[int], inter_item: list[int]) -> Dataset:
    """Users 30, 10, 20 (profile = id / 10) and items 700, 50, 300 (content = id)."""
    return Dataset.from_raw(
        user_id=np.array([30, 10, 20], np.int64),
        profile=np.array([[3.0, -3.0], [1.0, -1.0], [2.0, -2.0]], np.float32),
        item_id=np.array([700, 50, 300], np.int64),
        category=np.array([2, 0, 1], np.int32),
        content=np.array([[700.0], [50.0], [300.0]], np.float32),
        n_categories=3,
        inter_user_id=np.array(inter_user, np.int64),
        inter_item_id=np.array(inter_item, np.int64),
        inter_ts=np.arange(len(inter_user), dtype=np.int64) + 1_000,
    )


def test_from_raw_sorts_tables_and_maps_interactions_to_positions() -> None:
    data = _hand_dataset([10, 30, 20, 30], [300, 700, 50, 50])
    np.testing.assert_array_equal(data.user_id, [10, 20, 30])
    np.testing.assert_array_equal(data.profile, [[1, -1], [2, -2], [3, -3]])
    np.testing.assert_array_equal(data.item_id, [50, 300, 700])
    np.testing.assert_array_equal(data.category, [0, 1, 2])
    np.testing.assert_array_equal(data.content, [[50], [300], [700]])
    np.testing.assert_array_equal(data.inter_user, [0, 2, 1, 2])
    np.testing.assert_array_equal(data.inter_item, [1, 2, 0, 0])
    np.testing.assert_array_equal(data.inter_ts, [1000, 1001, 1002, 1003])
    assert (data.n_users, data.n_items, data.n_categories) == (3, 3, 3)
    assert data.profile.dtype == np.float32 and data.content.dtype == np.float32
    assert data.category.dtype == np.int32 and data.inter_user.dtype == np.int64
    # Every interaction's position points back at its raw ID.
    np.testing.assert_array_equal(data.user_id[data.inter_user], [10, 30, 20, 30])
    np.testing.assert_array_equal(data.item_id[data.inter_item], [300, 700, 50, 50])


def test_positions_of_raw_ids_and_per_user_sets() -> None:
    data = _hand_dataset([10, 30, 20, 30], [300, 700, 50, 50])
    np.testing.assert_array_equal(data.user_positions([20, 99, 10, 30]), [1, -1, 0, 2])
    np.testing.assert_array_equal(data.item_positions([700, 51, 50]), [2, -1, 0])
    sets = data.sets(np.array([True, True, False, True]))
    assert sets.n_rows == 3
    assert [sets.row(u).tolist() for u in range(3)] == [[1], [], [0, 2]]


@pytest.mark.parametrize(
    ("users", "items", "message"),
    [
        ([10, 99, 20], [50, 50, 50], "unknown user.*row 1, user_id 99"),
        ([10, 20, 30], [50, 300, 12345], "unknown item.*row 2, item_id 12345"),
    ],
)
def test_from_raw_names_the_unknown_id(users: list[int], items: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _hand_dataset(users, items)


def _batched(batches: list[tuple[list[int], list[int]]], n: int) -> Dataset:
    """``_hand_dataset``'s tables with the interactions in batches (times 1000, 1001, ...)."""
    ts = iter(range(1_000, 1_100))
    return Dataset.from_batches(
        np.array([30, 10, 20], np.int64),
        np.array([[3.0, -3.0], [1.0, -1.0], [2.0, -2.0]], np.float32),
        np.array([700, 50, 300], np.int64), np.array([2, 0, 1], np.int32),
        np.array([[700.0], [50.0], [300.0]], np.float32), 3,
        ((u, i, [next(ts) for _ in u]) for u, i in batches), n,
    )  # fmt: skip


def test_batches_give_the_dataset_one_array_gives() -> None:
    whole = _hand_dataset([10, 30, 20, 30, 20], [300, 700, 50, 50, 700])
    batched = _batched([([10, 30], [300, 700]), ([], []), ([20, 30, 20], [50, 50, 700])], 5)
    for name in ("user_id", "profile", "item_id", "category", "content", "inter_user",
                 "inter_item", "inter_ts"):  # fmt: skip
        np.testing.assert_array_equal(getattr(batched, name), getattr(whole, name), err_msg=name)
    # An unknown ID is named by its row in the whole log, not in its batch.
    with pytest.raises(ValueError, match=r"unknown item.*row 3, item_id 51"):
        _batched([([10, 30], [300, 700]), ([20, 30], [50, 51])], 4)
    with pytest.raises(ValueError, match="3 interactions, not the 4 announced"):
        _batched([([10, 30], [300, 700]), ([20], [50])], 4)
    with pytest.raises(ValueError, match="more than the 2 interactions announced"):
        _batched([([10, 30], [300, 700]), ([20], [50])], 2)


def test_from_raw_rejects_duplicate_table_ids() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Dataset.from_raw(
            np.array([1, 1], np.int64), np.zeros((2, 1), np.float32),
            np.array([5], np.int64), np.zeros(1, np.int32), np.zeros((1, 1), np.float32),
            1, np.array([1], np.int64), np.array([5], np.int64), np.array([0], np.int64),
        )  # fmt: skip


def test_temporal_split_is_disjoint_complete_and_ordered() -> None:
    rng = np.random.default_rng(0)
    ts = rng.integers(1_700_000_000, 1_700_000_000 + 10**7, 5_000).astype(np.int64)
    split = temporal_split(ts, 0.1, 0.2)
    masks = np.stack([split.train, split.val, split.test])
    np.testing.assert_array_equal(masks.sum(axis=0), np.ones(len(ts)))
    assert ts[split.train].max() < split.t_val <= ts[split.val].min()
    assert ts[split.val].max() < split.t_test <= ts[split.test].min()
    # Many distinct timestamps: the fractions land where asked.
    assert split.train.mean() == pytest.approx(0.7, abs=0.01)
    assert split.val.mean() == pytest.approx(0.1, abs=0.01)
    assert split.test.mean() == pytest.approx(0.2, abs=0.01)


def test_temporal_split_never_puts_one_timestamp_in_two_splits() -> None:
    ts = np.repeat(np.arange(10, dtype=np.int64), 7)[::-1].copy()  # heavy ties, unsorted
    split = temporal_split(ts, 0.25, 0.25)
    label = split.train * 0 + split.val * 1 + split.test * 2
    for t in np.unique(ts):
        assert len(np.unique(label[ts == t])) == 1, t
    assert split.train.any() and split.val.any() and split.test.any()


def test_temporal_split_without_validation() -> None:
    ts = np.arange(100, dtype=np.int64)
    split = temporal_split(ts, 0.0, 0.1)
    assert not split.val.any()
    assert split.train.sum() + split.test.sum() == 100
    assert ts[split.train].max() < ts[split.test].min()


@pytest.mark.parametrize(
    ("val", "test"), [(0.5, 0.5), (0.6, 0.5), (-0.1, 0.1), (0.1, 0.0), (0.1, 1.0), (1.0, 0.1)]
)
def test_temporal_split_rejects_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="bad split fractions"):
        temporal_split(np.arange(10, dtype=np.int64), val, test)


def test_temporal_split_rejects_no_interactions() -> None:
    with pytest.raises(ValueError, match="zero interactions"):
        temporal_split(np.array([], np.int64), 0.1, 0.1)


def _assert_partition(split: Split, n: int) -> None:
    masks = np.stack([split.train, split.val, split.test])
    assert masks.shape == (3, n) and masks.dtype == np.bool_
    np.testing.assert_array_equal(masks.sum(axis=0), np.ones(n))


def _per_user_counts(user: np.ndarray, split: Split) -> dict[int, tuple[int, int, int]]:
    return {
        int(u): (
            int(split.train[user == u].sum()),
            int(split.val[user == u].sum()),
            int(split.test[user == u].sum()),
        )
        for u in np.unique(user)
    }


def test_random_ratio_split_follows_recbole_counts_per_user() -> None:
    # User u has sizes[u] interactions, shuffled across the input.
    sizes = [1, 2, 3, 4, 5, 10, 25, 100]
    rng = np.random.default_rng(0)
    user = rng.permutation(np.repeat(np.arange(len(sizes)), sizes)).astype(np.int64)
    split = random_ratio_split(user, (0.8, 0.1, 0.1), seed=3)
    assert split.t_val is None and split.t_test is None and split.protocol == "random_ratio"
    _assert_partition(split, len(user))
    # val / test = floor(0.1 n), train the rest; then test, then val, take one from train
    # when 0 < 0.1 n < 1 and train still holds more than one:
    # n=1: 1/0/0 (train never emptied); n=2: 2/0/0 -> test bump -> 1/0/1, train=1 stops;
    # n=3, 4, 5: both bumps -> 1/1/1, 2/1/1, 3/1/1; n=10: 8/1/1; n=25: 21/2/2; n=100: 80/10/10.
    expected = [(1, 0, 0), (1, 0, 1), (1, 1, 1), (2, 1, 1), (3, 1, 1), (8, 1, 1), (21, 2, 2),
                (80, 10, 10)]  # fmt: skip
    assert _per_user_counts(user, split) == dict(enumerate(expected))


def test_random_ratio_split_shuffles_within_users_deterministically() -> None:
    user = np.zeros(1_000, np.int64)  # one user, interactions in input order
    a = random_ratio_split(user, (8, 1, 1), seed=7)  # ratios are normalised
    b = random_ratio_split(user, (0.8, 0.1, 0.1), seed=7)
    c = random_ratio_split(user, (0.8, 0.1, 0.1), seed=8)
    for x, y in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.test, c.test)
    assert (a.train.sum(), a.val.sum(), a.test.sum()) == (800, 100, 100)
    # Not the first 800 rows: the held-out rows are spread over the whole input.
    assert np.flatnonzero(a.test).min() < 500 < np.flatnonzero(a.test).max()


def test_random_ratio_split_without_validation() -> None:
    user = np.repeat(np.arange(50, dtype=np.int64), 10)
    split = random_ratio_split(user, (0.8, 0.0, 0.2), seed=0)
    assert not split.val.any()
    assert set(_per_user_counts(user, split).values()) == {(8, 0, 2)}


@pytest.mark.parametrize("ratios", [(0.8, 0.2), (0.0, 0.5, 0.5), (0.8, 0.2, 0.0), (1, -1, 1)])
def test_random_ratio_split_rejects_bad_ratios(ratios: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="bad split ratios"):
        random_ratio_split(np.zeros(5, np.int64), ratios)


def test_leave_one_out_holds_out_each_users_latest_interactions() -> None:
    # user: 0 0 0 0 | 1 1 | 2 2 2, shuffled in the input; times distinct per user.
    user = np.array([0, 1, 2, 0, 2, 0, 1, 2, 0], np.int64)
    ts = np.array([40, 5, 7, 10, 9, 30, 6, 8, 20], np.int64)
    split = leave_one_out_split(user, ts, seed=0)
    assert split.t_val is None and split.protocol == "leave_one_out"
    _assert_partition(split, len(user))
    # user 0: ts 40 -> test, 30 -> val, 10 and 20 -> train; user 1 has 2 -> all train;
    # user 2: 9 -> test, 8 -> val, 7 -> train.
    np.testing.assert_array_equal(np.flatnonzero(split.test), [0, 4])
    np.testing.assert_array_equal(np.flatnonzero(split.val), [5, 7])
    np.testing.assert_array_equal(np.flatnonzero(split.train), [1, 2, 3, 6, 8])


def test_leave_one_out_never_trains_on_anything_later_than_held_out() -> None:
    rng = np.random.default_rng(1)
    user = rng.integers(0, 300, 5_000).astype(np.int64)
    ts = rng.integers(0, 50, 5_000).astype(np.int64)  # many ties within a user
    split = leave_one_out_split(user, ts, seed=4)
    _assert_partition(split, len(user))
    counts = np.bincount(user)
    for u in np.unique(user):
        mine = user == u
        if counts[u] < 3:
            assert split.train[mine].all()
            continue
        assert split.test[mine].sum() == 1 and split.val[mine].sum() == 1
        t_test, t_val = ts[mine & split.test][0], ts[mine & split.val][0]
        assert ts[mine].max() == t_test >= t_val >= ts[mine & split.train].max()
    again = leave_one_out_split(user, ts, seed=4)
    np.testing.assert_array_equal(again.test, split.test)
    np.testing.assert_array_equal(again.val, split.val)
    # Another seed only reorders tied timestamps: the held-out times stay the same.
    other = leave_one_out_split(user, ts, seed=5)
    assert not np.array_equal(other.test, split.test)
    np.testing.assert_array_equal(np.sort(ts[other.test]), np.sort(ts[split.test]))


def test_make_split_dispatches_by_protocol() -> None:
    rng = np.random.default_rng(2)
    user = rng.integers(0, 40, 600).astype(np.int64)
    ts = rng.integers(0, 10**6, 600).astype(np.int64)
    cases: dict[SplitProtocol, Split] = {
        "temporal": temporal_split(ts, 0.2, 0.1),
        "random_ratio": random_ratio_split(user, (0.7, 0.2, 0.1), seed=9),
        "leave_one_out": leave_one_out_split(user, ts, seed=9),
    }
    for protocol, expected in cases.items():
        got = make_split(
            protocol, user, ts, val_frac=0.2, test_frac=0.1, ratios=(0.7, 0.2, 0.1), seed=9
        )
        assert got.protocol == protocol and got.t_val == expected.t_val
        for a, b in ((got.train, expected.train), (got.val, expected.val)):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(got.test, expected.test)
    assert isinstance(cases["temporal"].t_val, int)
    with pytest.raises(ValueError, match="unknown split protocol"):
        make_split("bogus", user, ts)  # type: ignore[arg-type]


def test_vocabulary_numbers_training_users_and_items_in_position_order() -> None:
    # Users (sorted) 10, 20, 30; items (sorted) 50, 300, 700.
    data = _hand_dataset([30, 10, 20, 30, 20], [700, 50, 300, 50, 50])
    train = np.array([True, True, False, True, False])  # users 30, 10; items 700, 50
    vocab = Vocabulary.from_training(data, train)
    np.testing.assert_array_equal(vocab.user_id_row, [1, 0, 2])  # 20 only in held-out data
    np.testing.assert_array_equal(vocab.item_id_row, [1, 0, 2])  # 300 only in held-out data
    assert (vocab.n_users, vocab.n_items) == (2, 2)

    tables = vocab.feature_tables(data)
    assert tables.user_profile.dtype == torch.float32
    assert tables.item_category_rows.dtype == torch.int64
    torch.testing.assert_close(tables.user_profile, torch.tensor([[0, 0], [1, -1], [3, -3.0]]))
    # category index c -> row c + 1; row 0 = unknown
    torch.testing.assert_close(tables.item_category_rows, torch.tensor([0, 1, 3]))
    torch.testing.assert_close(tables.item_content, torch.tensor([[0.0], [50], [700]]))


def test_vocabulary_of_an_empty_training_split() -> None:
    data = _hand_dataset([10], [50])
    vocab = Vocabulary.from_training(data, np.array([False]))
    assert (vocab.n_users, vocab.n_items) == (0, 0)
    tables = vocab.feature_tables(data)
    assert tables.user_profile.shape == (1, 2) and tables.item_content.shape == (1, 1)
    assert not tables.user_profile.any() and not tables.item_content.any()


def test_feature_table_rows_line_up_with_id_rows_on_synthetic_data() -> None:
    data = tiny_dataset(n_users=80, n_items=2000)
    split = temporal_split(data.inter_ts, 0.1, 0.3)
    vocab = Vocabulary.from_training(data, split.train)
    tables = vocab.feature_tables(data)
    # Rows 1..n, each used once, in position order; 0 for everything not seen in training.
    for rows, seen_positions in (
        (vocab.user_id_row, np.unique(data.inter_user[split.train])),
        (vocab.item_id_row, np.unique(data.inter_item[split.train])),
    ):
        np.testing.assert_array_equal(np.flatnonzero(rows), seen_positions)
        np.testing.assert_array_equal(rows[seen_positions], np.arange(1, len(seen_positions) + 1))
    assert vocab.n_items < data.n_items  # some items only appear after the cut
    assert tables.user_profile.shape == (vocab.n_users + 1, data.profile.shape[1])
    assert tables.item_content.shape == (vocab.n_items + 1, data.content.shape[1])
    for pos in np.flatnonzero(vocab.user_id_row):
        r = vocab.user_id_row[pos]
        np.testing.assert_array_equal(tables.user_profile[r].numpy(), data.profile[pos])
    for pos in np.flatnonzero(vocab.item_id_row):
        r = vocab.item_id_row[pos]
        np.testing.assert_array_equal(tables.item_content[r].numpy(), data.content[pos])
        assert tables.item_category_rows[r] == data.category[pos] + 1
    assert not tables.user_profile[0].any() and not tables.item_content[0].any()
    assert tables.item_category_rows[0] == 0


def test_id_vocab_maps_unknown_ids_to_zero() -> None:
    vocab = IdVocab.from_ids([40, 10, 30])
    np.testing.assert_array_equal(vocab.ids, [10, 30, 40])
    assert len(vocab) == 3
    # below, between, above the known IDs -> 0
    np.testing.assert_array_equal(vocab.rows([10, 30, 40, 5, 35, 100]), [1, 2, 3, 0, 0, 0])
    np.testing.assert_array_equal(vocab.rows(np.array([], np.int64)), np.array([], np.int64))
    empty = IdVocab.from_ids(np.array([], np.int64))
    np.testing.assert_array_equal(empty.rows([1, 2]), [0, 0])


def test_id_vocab_order_sorts_a_table_into_vocabulary_order() -> None:
    raw = np.array([40, 10, 30], np.int64)
    vocab = IdVocab.from_ids(raw)
    np.testing.assert_array_equal(raw[vocab.order(raw)], vocab.ids)


def test_id_vocab_rejects_duplicate_ids() -> None:
    with pytest.raises(ValueError, match="1 duplicate"):
        IdVocab.from_ids([3, 1, 3])


def test_category_rows_shift_by_one_and_send_out_of_range_to_zero() -> None:
    got = category_rows(np.array([-1, 0, 1, 3, 4, 99]), n_categories=4)
    np.testing.assert_array_equal(got, [0, 1, 2, 4, 0, 0])
    assert got.dtype == np.int64


def test_feature_tables_build_puts_zeros_in_row_zero() -> None:
    tables = FeatureTables.build(
        np.array([[1.0, 2.0]], np.float32),
        np.array([1, 7], np.int32),
        np.array([[3.0], [4.0]], np.float32),
        n_categories=2,
    )
    torch.testing.assert_close(tables.user_profile, torch.tensor([[0.0, 0.0], [1.0, 2.0]]))
    # category 7 is outside 0..1, so it becomes the unknown category row
    torch.testing.assert_close(tables.item_category_rows, torch.tensor([0, 2, 0]))
    torch.testing.assert_close(tables.item_content, torch.tensor([[0.0], [3.0], [4.0]]))

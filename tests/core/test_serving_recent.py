"""recent.parquet round trip: each user's latest items written as ragged lists and read
back as ragged item rows, and the files the reader refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from core.versionio import read_serving_tables, write_serving_tables
from model.dataset import Dataset, Vocabulary
from model.history import latest_items
from storage import VersionFiles, write_table
from storage.schemas import VERSION_RECENT
from tests.model.worlds import tiny_dataset


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Dataset, Vocabulary]:
    data = tiny_dataset()
    train = np.random.default_rng(0).random(len(data.inter_user)) < 0.8
    vocab = Vocabulary.from_training(data, train)
    folder = tmp_path_factory.mktemp("version")
    write_serving_tables(folder, data, vocab, history_len=5)
    return folder, data, vocab


def test_recent_items_read_back_as_each_users_latest_rows(
    written: tuple[Path, Dataset, Vocabulary],
) -> None:
    folder, data, vocab = written
    tables = read_serving_tables(folder, history_len=5)
    recent = tables.recent
    assert recent is not None and len(recent) == len(tables.user_id)
    everything = np.ones(len(data.inter_user), bool)
    latest = latest_items(
        data.inter_user, data.inter_item, data.inter_ts, everything, 5, data.n_users
    )
    # Users and items are stored in position order, so row u is user u's items as ID rows.
    for u in range(len(recent)):
        np.testing.assert_array_equal(recent.row(u), vocab.item_id_row[latest.row(u)])
    assert recent.lengths().max() == 5
    # A model that reads fewer items than the file holds is refused, not silently cut.
    with pytest.raises(ValueError, match="recent items, the model reads 4"):
        read_serving_tables(folder, history_len=4)


def _rewrite_recent(folder: Path, user_id: list[int], items: list[list[int]]) -> None:
    table = pa.table(
        {"user_id": pa.array(user_id, pa.int64()), "items": pa.array(items, pa.list_(pa.int64()))}
    )
    write_table(folder / VersionFiles.RECENT, table, VERSION_RECENT)


def test_reader_refuses_unknown_and_repeated_users_and_maps_unknown_items_to_zero(
    written: tuple[Path, Dataset, Vocabulary], tmp_path: Path
) -> None:
    folder, _, _ = written
    copy = tmp_path / "v"
    copy.mkdir()
    for name in (VersionFiles.USERS, VersionFiles.ITEMS):
        (copy / name).write_bytes((folder / name).read_bytes())
    tables = read_serving_tables(copy)
    u0, u1 = int(tables.user_id[0]), int(tables.user_id[1])
    i0 = int(tables.item_id[0])
    _rewrite_recent(copy, [u1, u0], [[i0, 10**12], []])
    recent = read_serving_tables(copy, history_len=3).recent
    assert recent is not None
    np.testing.assert_array_equal(recent.row(1), [tables.item_id_row[0], 0])
    assert recent.row(0).size == 0 and recent.lengths()[2:].sum() == 0
    _rewrite_recent(copy, [u0, u0], [[i0], [i0]])
    with pytest.raises(ValueError, match="holds a user twice"):
        read_serving_tables(copy, history_len=3)
    _rewrite_recent(copy, [10**12], [[i0]])
    with pytest.raises(ValueError, match="names users that are not in"):
        read_serving_tables(copy, history_len=3)
    (copy / VersionFiles.RECENT).unlink()
    with pytest.raises(ValueError, match="is missing"):
        read_serving_tables(copy, history_len=3)

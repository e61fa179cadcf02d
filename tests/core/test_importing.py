"""`towerflow import` conversion: real-format files become a snapshot that
``core.dataio.load_dataset`` reads unchanged, with features, ID maps and a report that
accounts for every row; strict mode writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.dataio import load_dataset, load_truth
from core.import_config import ImportConfig
from core.import_convert import UNKNOWN_CATEGORY, assign_ids, k_core_mask
from core.importing import (
    DataImportError,
    ImportResult,
    import_snapshot_id,
    input_checksums,
    load_id_map,
    run_import,
)
from storage import CATEGORIES, Layout, SnapshotFiles, list_snapshots, read_json, read_table

LOG_CSV = """user,item,when,rating
alice,m1,2020-01-01,5
bob,m2,2020-01-02T10:00:00Z,3
alice,m2,2020-01-03,4
,m3,2020-01-03,4
carol,m1,yesterday,5
bob,m1,2020-01-05,five
alice,m1,2020-01-01,5
carol,m3,2020-01-06,4
"""
ITEMS_TSV = "item\tgenres\tyear\nm1\tAction|Comedy\t1999\nm2\tDrama\t\nm9\tComedy\t2005\n"


def _cfg(tmp_path: Path, **over: Any) -> ImportConfig:
    (tmp_path / "log.csv").write_text(LOG_CSV, encoding="utf-8")
    (tmp_path / "items.tsv").write_text(ITEMS_TSV, encoding="utf-8")
    doc: dict[str, Any] = {
        "interactions": {
            "path": str(tmp_path / "log.csv"),
            "user_col": "user",
            "item_col": "item",
            "time_col": "when",
            "rating_col": "rating",
            "min_rating": 4,
        },
        "items": {
            "path": str(tmp_path / "items.tsv"),
            "key": "item",
            "multi": {"genres": "|"},
            "numeric": ["year"],
            "category": "genres",
        },
        "mode": "lenient",
        **over,
    }
    return ImportConfig.model_validate(doc)


def _import(tmp_path: Path, cfg: ImportConfig) -> tuple[ImportResult, Path]:
    layout = Layout(tmp_path / "store")
    result = run_import(layout, cfg)
    return result, layout.snapshot_dir(result.ref.snapshot_id)


def test_csv_with_string_ids_loads_with_features_and_report(tmp_path: Path) -> None:
    result, folder = _import(tmp_path, _cfg(tmp_path))
    data = load_dataset(folder)
    assert load_truth(folder, data) is None  # real data: no ground truth
    # Kept: alice-m1, alice-m2, carol-m3 (bob only had a rating of 3 and a bad one).
    assert (data.n_users, data.n_items, len(data.inter_user)) == (2, 4, 3)
    users, items = load_id_map(folder, "user"), load_id_map(folder, "item")
    assert users.id_to_raw() == {1: "alice", 2: "carol"}  # dense, sorted raw order
    # m3 has no attribute row; m9 is a catalogue entry nobody interacted with.
    assert items.raw.tolist() == ["m1", "m2", "m3", "m9"]
    assert items.to_ids(["m9", "nope"]).tolist() == [4, -1]

    rep = result.report
    assert rep.id_mapping == {"user": "dense", "item": "dense"} and rep.timestamps == "iso"
    assert rep.item_features == ["genres=Action", "genres=Comedy", "genres=Drama", "year"]
    content = data.content[data.item_positions(items.to_ids(["m1", "m2", "m3", "m9"]))]
    assert content[:, :3].tolist() == [[1, 1, 0], [0, 0, 1], [0, 0, 0], [0, 1, 0]]  # multi-hot
    assert content[:, 3].tolist() == [-1, 0, 0, 1]  # z-scored year; missing -> 0
    names = read_table(folder / CATEGORIES.file_name, CATEGORIES).column("name").to_pylist()
    assert names == ["Action", "Comedy", "Drama", UNKNOWN_CATEGORY]
    assert [names[c] for c in data.category] == ["Action", "Drama", UNKNOWN_CATEGORY, "Comedy"]
    assert data.profile.shape == (2, 1) and not data.profile.any()  # no user attributes

    log = rep.files[0]
    assert (log.rows_read, log.rows_kept) == (8, 3)
    assert {k: (v.count, v.rows) for k, v in log.invalid.items()} == {
        "missing_user": (1, [5]),
        "bad_timestamp": (1, [6]),
        "bad_rating": (1, [7]),
    }
    assert {k: v.rows for k, v in log.filtered.items()} == {
        "below_min_rating": [3],
        "duplicate": [8],
    }
    assert rep.files[1].missing_values == {"genres": 0, "year": 1}
    assert (rep.items_without_interactions, rep.items_without_attributes) == (1, 1)
    assert rep.users_without_attributes == 2
    meta = read_json(folder / SnapshotFiles.MANIFEST)
    assert meta["source"] == "import" and meta["counts"]["interactions"] == 3
    assert set(meta["files"]) >= {"users.parquet", "user_ids.parquet", "item_ids.parquet"}


def test_strict_mode_raises_with_rows_and_writes_nothing(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, mode="strict")
    layout = Layout(tmp_path / "store")
    with pytest.raises(DataImportError, match=r"log.csv.*missing_user \(rows 5\)") as err:
        run_import(layout, cfg)
    assert "bad_timestamp (rows 6)" in str(err.value) and "bad_rating (rows 7)" in str(err.value)
    assert list_snapshots(layout) == []
    assert not layout.staging_snapshots_dir.exists() or not any(
        layout.staging_snapshots_dir.iterdir()
    )


def test_same_inputs_reuse_the_snapshot_wherever_the_files_lie(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    first, _ = _import(tmp_path, cfg)
    again, _ = _import(tmp_path, cfg)
    assert again.reused and again.ref == first.ref and again.report == first.report
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "log.csv").write_text(LOG_CSV, encoding="utf-8")
    doc = cfg.model_dump()
    doc["interactions"]["path"] = str(moved / "log.csv")
    assert import_snapshot_id(ImportConfig.model_validate(doc), input_checksums(cfg)) == (
        first.ref.snapshot_id
    )
    stricter = cfg.model_copy(update={"k_core": 1})
    assert import_snapshot_id(stricter, input_checksums(cfg)) != first.ref.snapshot_id


def test_colon_separated_int_ids_latin1_keep_raw_ids(tmp_path: Path) -> None:
    log = tmp_path / "ratings.dat"
    log.write_text("1::20::5::100\n2::20::4::90\n2::35::2::95\n\n10::35::5::80\n")
    movies = tmp_path / "movies.dat"
    text = "20::Amélie (2001)::Comedy|Romance\n35::Heat (1995)::Action\n"
    movies.write_bytes(text.encode("latin-1"))
    read = {"header": False, "encoding": "latin-1"}
    cfg = ImportConfig.model_validate(
        {
            "interactions": {
                "path": str(log),
                "read": {**read, "names": ["u", "i", "r", "t"]},
                "user_col": "u",
                "item_col": "i",
                "time_col": "t",
                "rating_col": "r",
                "min_rating": 4,
            },
            "items": {
                "path": str(movies),
                "read": read,
                "key": "1",
                "multi": {"3": "|"},
                "category": "3",
            },
        }
    )
    result, folder = _import(tmp_path, cfg)
    data = load_dataset(folder)
    assert result.report.id_mapping == {"user": "identity", "item": "identity"}
    assert data.user_id.tolist() == [1, 2, 10] and data.item_id.tolist() == [20, 35]
    pairs = zip(data.user_id[data.inter_user].tolist(), data.inter_ts.tolist(), strict=True)
    assert sorted(pairs) == [
        (1, 100),
        (2, 90),
        (10, 80),
    ]
    assert result.report.files[0].filtered["below_min_rating"].rows == [3]
    assert result.report.item_features == ["3=Action", "3=Comedy", "3=Romance"]
    assert load_id_map(folder, "item").to_raw([35, 20]) == ["35", "20"]


def test_parquet_with_labels_keeps_positives_and_row_order_time(tmp_path: Path) -> None:
    path = tmp_path / "clicks.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(["x", "y", "x", "y", "007"]),
                "item_id": pa.array([5, 5, 6, 7, 7], pa.int64()),
                "clicked": pa.array([True, False, True, True, True]),
            }
        ),
        path,
    )
    cfg = ImportConfig.model_validate(
        {"interactions": {"path": str(path), "label_col": "clicked"}, "name": "clicks"}
    )
    result = run_import(Layout(tmp_path / "store"), cfg).ref
    assert result.snapshot_id.startswith("clicks-") and result.n_interactions == 4
    folder = Layout(tmp_path / "store").snapshot_dir(result.snapshot_id)
    data = load_dataset(folder)
    users = load_id_map(folder, "user")
    assert users.raw.tolist() == ["007", "x", "y"] and users.ids.tolist() == [1, 2, 3]
    assert load_id_map(folder, "item").ids.tolist() == [5, 6, 7]
    assert data.content.shape == (3, 1) and data.n_categories == 1  # all "unknown"
    assert sorted(data.inter_ts.tolist()) == [1, 3, 4, 5]  # row numbers as time
    report = read_json(folder / SnapshotFiles.MANIFEST)["report"]
    assert report["timestamps"] == "row_order"
    assert report["files"][0]["filtered"]["negative_label"]["rows"] == [2]


def test_user_attributes_unknown_items_and_require(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("uid,sex,age\nalice,F,30\ncarol,M,x\ndave,M,50\n")
    users = {
        "path": str(tmp_path / "users.csv"),
        "key": "uid",
        "categorical": ["sex"],
        "numeric": ["age"],
    }
    result, folder = _import(tmp_path, _cfg(tmp_path, users=users))
    data = load_dataset(folder)
    ids = load_id_map(folder, "user")
    assert ids.raw.tolist() == ["alice", "carol", "dave"]  # dave: catalogue-only user
    assert result.report.user_features == ["sex=F", "sex=M", "age"]
    assert data.profile[:, :2].tolist() == [[1, 0], [0, 1], [0, 1]]
    assert data.profile[:, 2].tolist() == [-1, 0, 1]  # "x" is a bad value -> missing -> 0
    user_file = result.report.files[2]
    assert user_file.invalid["bad_numeric:age"].rows == [3]

    cfg = _cfg(tmp_path)
    assert cfg.items is not None
    (tmp_path / "items.tsv").write_text("item\tgenres\tyear\nm1\tAction\t1999\n")
    required = cfg.model_copy(update={"items": cfg.items.model_copy(update={"require": True})})
    result, _ = _import(tmp_path, required)
    assert result.report.files[0].invalid["unknown_item"].rows == [3, 4, 9]


def test_k_core_drops_until_stable() -> None:
    # u0 and u1 rate i0, i1; u2 rates i1, i2; i2 falls (1 rating), then u2 (1 left).
    users = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 0, 1, 1, 2])
    keep, rounds = k_core_mask(users, items, 2)
    assert keep.tolist() == [True, True, True, True, False, False] and rounds == 2
    assert k_core_mask(users, items, 3)[0].sum() == 0
    keep, rounds = k_core_mask(users, items, 1)
    assert keep.all() and rounds == 0


def test_k_core_import_drops_catalogue_rows_too(tmp_path: Path) -> None:
    result, folder = _import(tmp_path, _cfg(tmp_path, k_core=1))
    assert load_id_map(folder, "item").raw.tolist() == ["m1", "m2", "m3"]
    assert result.report.files[1].filtered["k_core"].rows == [4]  # m9, never rated
    # Kept ratings: alice m1, alice m2, carol m3: every item has one, so the 2-core is empty.
    with pytest.raises(DataImportError, match="no interaction is left"):
        _import(tmp_path, _cfg(tmp_path, k_core=2))


def test_assign_ids_rule() -> None:
    ids, rule = assign_ids(np.array(["1", "10", "2"], object))
    assert rule == "identity" and ids.tolist() == [1, 10, 2]
    ids, rule = assign_ids(np.array(["007", "7"], object))  # distinct raw IDs stay distinct
    assert rule == "dense" and ids.tolist() == [1, 2]

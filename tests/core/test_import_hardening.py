"""Import hardening: implausible times, control characters in IDs, records that run over
lines, per-file separators and the streaming reader. One regression test per defect of the
issue (each failed before), then the new options; every bad input ends as a counted bad
line (lenient) or one error naming file, line and problem (strict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.dataio import load_dataset
from core.import_config import ImportConfig
from core.import_report import FileReport
from core.importing import DataImportError, ImportResult, load_id_map, run_import
from storage import Layout, list_snapshots
from storage.rawlog import RawReadError

T = 1_600_000_000  # 2020-09-13, unix seconds


def _log(path: Path, rows: list[str], header: str = "user_id,item_id,ts") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _normal(n: int, start: int = 1) -> list[str]:
    return [f"{u},{u % 3 + 1},{T + u}" for u in range(start, start + n)]


def _import(tmp_path: Path, log: Path, mode: str = "lenient", **over: Any) -> ImportResult:
    doc: dict[str, Any] = {"path": str(log), "time_col": "ts", **over}
    cfg = ImportConfig.model_validate({"interactions": doc, "mode": mode})
    return run_import(Layout(tmp_path / "store"), cfg)


def _accounted(f: FileReport) -> None:
    """Every physical line is a kept row, a counted dropped line, a blank or the header."""
    dropped = sum(r.count for k, r in {**f.invalid, **f.filtered}.items() if ":" not in k)
    assert f.rows_read == f.rows_kept + f.rows_dropped
    assert f.rows_dropped == dropped


# -- defect 1: timestamps of 1e14 s and 4e18 s were accepted ------------------------------


def test_implausible_timestamps_are_bad_rows(tmp_path: Path) -> None:
    log = _log(
        tmp_path / "log.csv", [*_normal(6), "7,1,100000000000000", "8,2,4000000000000000000"]
    )
    result = _import(tmp_path, log)
    f = result.report.files[0]
    bad = f.invalid["timestamp_out_of_range"]
    assert (bad.count, bad.rows, bad.values) == (
        2,
        [8, 9],
        ["100000000000000", "4000000000000000000"],
    )
    assert result.report.timestamp_unit == "s" and result.ref.n_interactions == 6
    _accounted(f)
    with pytest.raises(DataImportError) as err:
        _import(tmp_path, log, mode="strict")
    msg = str(err.value)
    assert "log.csv (interactions): 2 x timestamp_out_of_range (rows 8, 9)" in msg
    assert "line 8: '100000000000000'" in msg and "1970-01-01..2100-01-01" in msg


@pytest.mark.parametrize(
    ("unit", "scale", "detected"),
    [("auto", 1000, "ms"), ("auto", 10**6, "us"), ("auto", 10**9, "ns"), ("ms", 1000, "ms")],
)
def test_timestamp_units_convert_to_seconds(
    tmp_path: Path, unit: str, scale: int, detected: str
) -> None:
    rows = [f"{u},{u},{(T + u) * scale + scale // 2}" for u in range(1, 5)]
    result = _import(tmp_path, _log(tmp_path / "log.csv", rows), timestamp_unit=unit)
    assert result.report.timestamp_unit == detected
    data = load_dataset(Layout(tmp_path / "store").snapshot_dir(result.ref.snapshot_id))
    assert sorted(data.inter_ts.tolist()) == [T + 1, T + 2, T + 3, T + 4]  # floored


def test_wrong_explicit_unit_and_iso_out_of_range_are_bad(tmp_path: Path) -> None:
    ms = _log(tmp_path / "ms.csv", [f"{u},{u},{(T + u) * 1000}" for u in range(1, 4)] + _normal(1))
    with pytest.raises(DataImportError, match=r"3 x timestamp_out_of_range \(rows 2, 3, 4\)"):
        _import(tmp_path, ms, mode="strict", timestamp_unit="s")
    rows = ["1,1,2020-01-01", "2,2,1969-12-31T23:59:59Z", "3,3,2100-01-01", "4,4,soon"]
    result = _import(tmp_path, _log(tmp_path / "iso.csv", rows))
    assert result.report.timestamps == "iso" and result.report.timestamp_unit is None
    assert result.report.files[0].invalid["timestamp_out_of_range"].rows == [3, 4]
    assert result.report.files[0].invalid["bad_timestamp"].rows == [5]


# -- defect 2: NUL bytes made a new user and switched the ID map to dense ---------------


def test_control_characters_in_ids_are_bad_rows(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    rows = [*_normal(4), "\x00\x001,2," + str(T), '"3\t3",1,' + str(T), "4,\u200b2," + str(T)]
    _log(log, rows)
    result = _import(tmp_path, log)
    rep = result.report
    assert rep.id_mapping == {"user": "identity", "item": "identity"}
    assert rep.n_users == 4 and rep.n_interactions == 4
    f = rep.files[0]
    assert {k: (v.count, v.rows) for k, v in f.invalid.items()} == {
        "bad_user_id": (2, [6, 7]),
        "bad_item_id": (1, [8]),
    }
    assert f.invalid["bad_user_id"].values == ["\x00\x001", "3\t3"]
    _accounted(f)
    with pytest.raises(
        DataImportError, match=r"bad_user_id \(rows 6, 7\) e\.g\. line 6: '\\x00\\x001'"
    ):
        _import(tmp_path, log, mode="strict")


def test_control_characters_in_attribute_keys_are_bad_rows(tmp_path: Path) -> None:
    log = _log(tmp_path / "log.csv", _normal(3))
    items = tmp_path / "items.csv"
    items.write_text("item,genre\n1,a\n2,b\n\x003,c\n", encoding="utf-8")
    attrs = {"path": str(items), "key": "item", "categorical": ["genre"]}
    doc = {"path": str(log), "time_col": "ts"}
    cfg = ImportConfig.model_validate({"interactions": doc, "items": attrs, "mode": "lenient"})
    rep = run_import(Layout(tmp_path / "store"), cfg).report
    assert rep.files[1].invalid["bad_key"].rows == [4]
    assert rep.id_mapping["item"] == "identity" and rep.n_items == 3  # 1, 2, 3 from the log


# -- defect 3: a quote over lines 11-15 was counted as 1 dropped row, 5 were lost --------


@pytest.mark.parametrize("block_bytes", [1 << 20, 64])
def test_lenient_counts_every_line_of_a_record_over_lines(tmp_path: Path, block_bytes: int) -> None:
    rows = _normal(9)  # lines 2-10
    rows += [f'10,"1,{T}', "11,1,1", "12,1,1", "13,1,1", f'14",1,{T}']  # lines 11-15
    rows += _normal(5, start=15)  # lines 16-20
    log = _log(tmp_path / "log.csv", rows)
    layout = Layout(tmp_path / "store")
    cfg = ImportConfig.model_validate(
        {"interactions": {"path": str(log), "time_col": "ts"}, "mode": "lenient"}
    )
    f = run_import(layout, cfg, block_bytes=block_bytes).report.files[0]
    bad = f.invalid["multiline_record"]
    assert (bad.count, bad.rows) == (5, [11, 12, 13, 14, 15])
    assert (f.lines, f.rows_read, f.rows_kept, f.rows_dropped) == (20, 19, 14, 5)
    _accounted(f)
    strict = cfg.model_copy(update={"mode": "strict"})
    with pytest.raises(DataImportError, match=r"5 x multiline_record \(rows 11, 12, 13, 14, 15\)"):
        run_import(layout, strict, block_bytes=block_bytes)


def test_without_quoting_a_stray_quote_costs_nothing(tmp_path: Path) -> None:
    rows = [*_normal(3), f'4,"2,{T}', *_normal(2, start=5)]
    log = _log(tmp_path / "log.csv", rows)
    result = _import(tmp_path, log, read={"quote": None})
    assert result.report.files[0].invalid == {}
    assert load_id_map(
        Layout(tmp_path / "store").snapshot_dir(result.ref.snapshot_id), "item"
    ).raw.tolist() == ['"2', "1", "2", "3"]  # the quote is part of the ID: dense map


def test_wrong_field_counts_and_undecodable_lines_are_counted(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    body = "\n".join(["user_id,item_id,ts", *_normal(2), "3,1", f"4,1,{T},x", *_normal(1, 5)])
    log.write_bytes(body.encode() + b"\n6,caf\xe9," + str(T).encode() + b"\n\n   \n")
    f = _import(tmp_path, log).report.files[0]
    assert {k: (v.count, v.rows) for k, v in f.invalid.items()} == {
        "wrong_field_count": (2, [4, 5]),
        "undecodable": (1, [7]),
    }
    assert "byte 6 of the line" in f.invalid["undecodable"].values[0]
    assert (f.blank_lines, f.lines) == (2, 9)
    _accounted(f)


# -- defect 5: --sep applied to the attribute files too -----------------------------------


def _movielens_100k(tmp_path: Path) -> tuple[Path, Path]:
    """u.data (tab, no header) and u.item ('|', latin-1) as in MovieLens-100K."""
    data = tmp_path / "u.data"
    data.write_text("".join(f"{u}\t{i}\t{3 + u % 3}\t{T + u * 7 + i}\n"
                            for u in range(1, 6) for i in (1, 2, 3)))  # fmt: skip
    item = tmp_path / "u.item"
    lines = [f"{i}|Film {i}, The (1995)|01-Jan-1995||http://x/{i}|0|1|0" for i in (1, 2, 3, 4)]
    lines[1] = "2|Amélie (2001)|01-Jan-2001||http://x/2|1|0|1"
    item.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return data, item


def test_attribute_file_keeps_its_own_separator(tmp_path: Path) -> None:
    data, item = _movielens_100k(tmp_path)
    read = {"header": False, "encoding": "latin-1"}
    cfg = ImportConfig.model_validate(
        {
            "interactions": {"path": str(data), "read": {**read, "sep": "\t"},
                             "user_col": "1", "item_col": "2", "time_col": "4"},
            "items": {"path": str(item), "read": read, "key": "1", "categorical": ["6", "7"]},
        }
    )  # fmt: skip
    result = run_import(Layout(tmp_path / "store"), cfg)
    assert result.report.n_items == 4 and result.report.id_mapping["item"] == "identity"
    assert result.report.item_features == ["6=0", "6=1", "7=0", "7=1"]
    doc = cfg.model_dump()
    doc["items"]["read"]["sep"] = "\t"
    one_column = ImportConfig.model_validate(doc)
    with pytest.raises(RawReadError, match=r"u.item: every line reads as one column.*'\|'"):
        run_import(Layout(tmp_path / "store"), one_column)
    named = ImportConfig.model_validate(
        {**cfg.model_dump(), "items": {"path": str(item), "key": "id",
         "read": {**read, "sep": "\t", "names": ["id", "title", "date", "v", "url", "a", "b"]}}}
    )  # fmt: skip
    with pytest.raises(RawReadError, match=r"u.item: no line of the first 4 has the 7 fields"):
        run_import(Layout(tmp_path / "store"), named)
    assert list_snapshots(Layout(tmp_path / "store")) == [result.ref.snapshot_id]


def test_separator_is_sniffed_for_unknown_extensions(tmp_path: Path) -> None:
    log = tmp_path / "events.log"
    log.write_text("u;i;ts\n" + "".join(f"{u};{u};{T + u}\n" for u in range(1, 4)))
    result = _import(tmp_path, log, user_col="u", item_col="i")
    assert result.ref.n_interactions == 3
    log.write_text("u i ts\n1 2 3\n")
    with pytest.raises(RawReadError, match=r"events\.log: cannot tell the separator"):
        _import(tmp_path, log)


# -- defect 4: a 2 GB log died of MemoryError: the log is streamed ------------------------


def test_chunked_import_equals_whole_file_import(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [f"u{rng.integers(50)},i{rng.integers(30)},{T + int(rng.integers(10**6))},"
            f"{rng.integers(1, 6)}" for _ in range(3000)]  # fmt: skip
    rows[100] = f"u1,,{T},4"
    rows[2000] = f"u2,i3,{T * 1000},5"
    rows[2500] = rows[2499]  # an exact duplicate
    log = _log(tmp_path / "log.csv", rows, header="user,item,ts,rating")
    cfg = ImportConfig.model_validate(
        {"interactions": {"path": str(log), "user_col": "user", "item_col": "item",
                          "time_col": "ts", "rating_col": "rating", "min_rating": 3},
         "k_core": 2, "mode": "lenient"}
    )  # fmt: skip
    whole = run_import(Layout(tmp_path / "a"), cfg)
    chunked = run_import(Layout(tmp_path / "b"), cfg, block_bytes=512)  # ~25 lines a chunk
    assert chunked.report == whole.report and chunked.ref.snapshot_id == whole.ref.snapshot_id
    a = load_dataset(Layout(tmp_path / "a").snapshot_dir(whole.ref.snapshot_id))
    b = load_dataset(Layout(tmp_path / "b").snapshot_dir(chunked.ref.snapshot_id))
    for name in ("inter_user", "inter_item", "inter_ts", "user_id", "item_id"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    f = whole.report.files[0]
    assert f.invalid["missing_item"].rows == [102]
    assert f.invalid["timestamp_out_of_range"].rows == [2002]
    assert f.filtered["duplicate"].count >= 1
    _accounted(f)


@pytest.mark.slow
def test_ten_million_rows_fit_in_two_gib(tmp_path: Path) -> None:
    from bench.import_rss import measure_import, write_log

    path = tmp_path / "log.csv"
    write_log(path, 10_000_000, "str")
    _, peak_mib, report = measure_import(path, tmp_path / "store")
    assert report["files"][0]["rows_read"] == 10_000_000
    assert peak_mib < 2048, f"peak RSS {peak_mib:.0f} MiB"

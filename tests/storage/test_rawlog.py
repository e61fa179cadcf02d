"""Raw input files: every supported layout reads to the same text table with the right line
numbers; the decoders mark exactly the values that do not parse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.rawlog import (
    RawReadError,
    parse_floats,
    parse_id_ints,
    parse_labels,
    parse_times,
    read_raw_table,
    resolve_format,
    split_multi,
)

ROWS = [["u1", "10", "5"], ["u2", "Amélie (2001)", "3"]]


def _write(path: Path, sep: str, header: bool = True, encoding: str = "utf-8") -> Path:
    lines = ([sep.join(["user", "item", "rating"])] if header else []) + [sep.join(r) for r in ROWS]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


@pytest.mark.parametrize(
    ("name", "sep"), [("log.csv", ","), ("log.tsv", "\t"), ("log.dat", "::"), ("log.txt", "||")]
)
def test_delimited_files_read_as_text(tmp_path: Path, name: str, sep: str) -> None:
    path = _write(tmp_path / name, sep)
    table = read_raw_table(path, sep=sep if name.endswith(".txt") else None)
    assert list(table.frame.columns) == ["user", "item", "rating"]
    assert table.frame.to_numpy().tolist() == ROWS
    assert table.line.tolist() == [2, 3]  # the header is line 1


def test_no_header_names_columns_by_position_or_by_names(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.dat", "::", header=False)
    by_position = read_raw_table(path, header=False)
    assert list(by_position.frame.columns) == ["1", "2", "3"]
    assert by_position.line.tolist() == [1, 2]
    named = read_raw_table(path, header=False, names=["u", "i", "r"])
    assert named.column("i").tolist() == ["10", "Amélie (2001)"]


def test_latin1_needs_its_encoding(tmp_path: Path) -> None:
    path = _write(tmp_path / "movies.dat", "::", encoding="latin-1")
    with pytest.raises(RawReadError, match=r"movies.dat: cannot decode as utf-8.*latin-1"):
        read_raw_table(path)
    assert read_raw_table(path, encoding="latin-1").column("item")[1] == "Amélie (2001)"


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item\n a , 1\n\n\nb,\n,\n", encoding="utf-8")
    table = read_raw_table(path)
    assert table.line.tolist() == [2, 5] and table.blank_lines == 3
    assert table.frame.to_numpy().tolist() == [["a", "1"], ["b", ""]]  # stripped, "" = missing


def test_malformed_row_and_missing_column_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n3,4,5\n", encoding="utf-8")
    with pytest.raises(RawReadError, match=r"log.csv: .*line 3"):
        read_raw_table(path)
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(RawReadError, match=r"log.csv: no column 'user'.*\['a', 'b'\]"):
        read_raw_table(path).require(["a", "user", None])
    with pytest.raises(RawReadError, match="not found"):
        read_raw_table(tmp_path / "absent.csv")
    with pytest.raises(RawReadError, match="cannot tell the format"):
        resolve_format(tmp_path / "log.weird")


def test_parquet_columns_become_text(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    table = pa.table(
        {
            "user": pa.array([7, 8, None], pa.int64()),
            "item": pa.array([1.0, float("nan"), 3.0]),  # ints that went through floats
            "score": pa.array([0.5, 2.0, 1.0]),
            "ts": pa.array([0, 1_500, None], pa.timestamp("ms", tz="UTC")),
            "name": pa.array(["x", None, "z"]),
        }
    )
    pq.write_table(table, path)
    raw = read_raw_table(path)
    assert raw.frame.to_numpy().tolist() == [
        ["7", "1", "0.5", "0", "x"],
        ["8", "", "2", "1", ""],
        ["", "3", "1", "", "z"],
    ]
    assert raw.line.tolist() == [1, 2, 3]
    renamed = read_raw_table(path, fmt="parquet", names=["a", "b", "c", "d", "e"])
    assert list(renamed.frame.columns) == ["a", "b", "c", "d", "e"]


def test_decoders_mark_bad_values() -> None:
    ok, ids = parse_id_ints(np.array(["7", "007", "0", "-1", "x", "9223372036854775808"], object))
    assert ok.tolist() == [True, False, True, False, False, False] and ids[0] == 7
    num, bad = parse_floats(np.array(["4", "2.5", "", "five", "inf"], object))
    assert bad.tolist() == [False, False, False, True, True] and num[1] == 2.5
    assert np.isnan(num[2])
    ts, bad, kind = parse_times(np.array(["978300760", "978300761.9", "", "soon"], object))
    assert kind == "unix" and ts[:2].tolist() == [978300760, 978300761]
    assert bad.tolist() == [False, False, False, True]
    text = np.array(["2000-01-01", "2000-01-01T00:00:10+00:10", "31/12/2000", ""], object)
    ts, bad, kind = parse_times(text)
    assert kind == "iso" and ts[:2].tolist() == [946684800, 946684800 + 10 - 600]
    assert bad.tolist() == [False, False, True, False]
    labels, bad = parse_labels(np.array(["1", "0", "TRUE", "no", "2", "maybe", ""], object))
    assert labels.tolist()[:5] == [1, 0, 1, 0, 1] and bad.tolist()[5:] == [True, False]
    assert split_multi(np.array(["Action| Comedy", "", "Drama|"], object), "|") == [
        ["Action", "Comedy"],
        [],
        ["Drama"],
    ]

"""Raw input files: every supported layout reads to the same text table with the right line
numbers; the decoders mark exactly the values that do not parse."""

from __future__ import annotations

import re
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
from storage.rawparse import (
    PLAUSIBLE_SECONDS,
    TIME_MISSING,
    TIME_OUT_OF_RANGE,
    TimeDecoder,
    has_control_chars,
)
from storage.rawstream import open_raw, sniff_separator

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
    wrong = read_raw_table(path)  # the line that does not decode is rejected, named
    assert wrong.line.tolist() == [2] and [(r.line, r.reason) for r in wrong.rejected] == [
        (3, "undecodable")
    ]
    assert re.search(
        r"cannot decode as utf-8 .*byte 7 of the line.*latin-1", wrong.rejected[0].text
    )
    assert read_raw_table(path, encoding="latin-1").column("item")[1] == "Amélie (2001)"


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user,item\n a , 1\n\n\nb,\n,\n", encoding="utf-8")
    table = read_raw_table(path)
    assert table.line.tolist() == [2, 5] and table.blank_lines == 3
    assert table.frame.to_numpy().tolist() == [["a", "1"], ["b", ""]]  # stripped, "" = missing


def test_malformed_row_and_missing_column_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("a,b\n1,2\n3,4,5\n6\n", encoding="utf-8")
    table = read_raw_table(path)
    assert table.line.tolist() == [2]
    assert [(r.line, r.n_lines, r.reason) for r in table.rejected] == [
        (3, 1, "wrong_field_count"),
        (4, 1, "wrong_field_count"),
    ]
    assert table.rejected[0].text == "3 fields, expected 2: 3,4,5"
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


def test_time_decoder_units_range_and_auto_rule() -> None:
    t = 1_600_000_000
    for unit, scale in (("s", 1), ("ms", 10**3), ("us", 10**6), ("ns", 10**9)):
        decoder = TimeDecoder()
        secs, status = decoder.decode(
            pa.array([str(t * scale), str((t + 1) * scale + scale // 2), ""])
        )
        assert (decoder.fmt, decoder.unit) == ("unix", unit)
        assert secs[:2].tolist() == [t, t + 1] and status.tolist() == [0, 0, TIME_MISSING]
    # One file, one unit: the outliers of a seconds log are out of range, not re-scaled.
    decoder = TimeDecoder()
    text = pa.array([str(t), str(t + 5), "100000000000000", "4000000000000000000", "-1", "x"])
    secs, status = decoder.decode(text)
    assert decoder.unit == "s" and secs[:2].tolist() == [t, t + 5]
    assert status.tolist() == [0, 0, TIME_OUT_OF_RANGE, TIME_OUT_OF_RANGE, TIME_OUT_OF_RANGE, 2]
    lo, hi = PLAUSIBLE_SECONDS
    _, status = TimeDecoder("unix", "s").decode(pa.array([str(lo), str(hi - 1), str(hi)]))
    assert status.tolist() == [0, 0, TIME_OUT_OF_RANGE]
    _, status = TimeDecoder().decode(pa.array(["2099-12-31T23:59:59Z", "2100-01-01", "1969-12-31"]))
    assert status.tolist() == [0, TIME_OUT_OF_RANGE, TIME_OUT_OF_RANGE]


def test_control_characters_are_found() -> None:
    text = pa.array(["7", "a b", "\x00\x001", "x\ty", "\u200bz", "\ufeffq", "é", "a\u2028b"])
    assert has_control_chars(text).tolist() == [False, False, True, True, True, True, False, True]
    assert not has_control_chars(pa.array(["plain", "ascii 123"])).any()  # the fast path


def test_separator_sniffing() -> None:
    assert sniff_separator("1::Toy|Comedy::x\n2::Heat::y\n") == ("::", 3)
    assert sniff_separator("1|Toy Story, The|1995\n2|Heat|1995\n") == ("|", 3)
    assert sniff_separator("a\tb\n1\t2\n") == ("\t", 2)
    assert sniff_separator("just words\nhere too\n") is None


def test_multi_character_separator_ignores_quotes_and_stand_in_bytes(tmp_path: Path) -> None:
    path = tmp_path / "movies.dat"
    path.write_text('1::"Weird" Al::Comedy\n2::x\x1fy, "z::Drama\n', encoding="utf-8")
    table = read_raw_table(path, header=False)
    assert table.frame.to_numpy().tolist() == [
        ["1", '"Weird" Al', "Comedy"],
        ["2", 'x\x1fy, "z', "Drama"],
    ]


@pytest.mark.parametrize("block_bytes", [1 << 20, 97, 13])
def test_every_line_is_accounted_for_at_any_block_size(tmp_path: Path, block_bytes: int) -> None:
    rng = np.random.default_rng(block_bytes)
    kinds = {  # line -> kept row (1), blank (0) or rejected (-1)
        "": 0, "  ": 0, "{i},x,1": 1, "{i},y": -1, '{i},"q,r",2': 1, "{i},,": 1,
        "{i},1,2,3": -1, "{i},z,3": 1,
    }  # fmt: skip
    lines: list[str] = ["a,b,c"]
    status: list[int | None] = [None]
    for i in range(400):
        kind = list(kinds)[int(rng.integers(len(kinds)))]
        lines.append(kind.format(i=i))
        status.append(kinds[kind])
    path = tmp_path / "log.csv"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    table = read_raw_table(path, block_bytes=block_bytes)
    assert table.line.tolist() == [n + 1 for n, k in enumerate(status) if k == 1]
    assert table.blank_lines == status.count(0)
    assert [r.line for r in table.rejected] == [n + 1 for n, k in enumerate(status) if k == -1]
    assert {r.reason for r in table.rejected} == {"wrong_field_count"}
    assert table.frame.loc[table.line.tolist().index(next(
        n + 1 for n, ln in enumerate(lines) if '"' in ln)), "b"] == "q,r"  # fmt: skip
    assert read_raw_table(path).frame.equals(table.frame)


def test_parquet_streams_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "big.parquet"
    n = 600_000  # over two batches
    pq.write_table(pa.table({"u": np.arange(n) % 7, "i": np.arange(n)}), path, row_group_size=n)
    source = open_raw(path)
    chunks = list(source.chunks())
    assert len(chunks) > 1 and sum(c.table.num_rows for c in chunks) == n
    assert chunks[1].line[0] == chunks[0].line[-1] + 1

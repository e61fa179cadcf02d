"""Raw input files for import: interaction logs and attribute tables in delimited text (any
one- or multi-character separator) or parquet, read as stripped text with each row's line
number in its file, plus the decoders that turn those text fields into IDs, numbers, times
and labels while marking the values that do not parse.

Every value is read as text first so that a bad value can be reported (file, line, column)
instead of failing the whole read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.errors import StorageError

__all__ = [
    "Format",
    "RawReadError",
    "RawTable",
    "TimeFormat",
    "parse_floats",
    "parse_id_ints",
    "parse_labels",
    "parse_times",
    "read_raw_table",
    "resolve_format",
    "split_multi",
]

log = logging.getLogger(__name__)

Format = Literal["auto", "csv", "tsv", "parquet"]
TimeFormat = Literal["auto", "unix", "iso"]

# Separators implied by a file's extension when none is given (".dat" is MovieLens' "::").
_EXT_SEP: Final = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".dat": "::"}
_PARQUET_EXT: Final = frozenset({".parquet", ".pq"})
_INT64_MAX: Final = np.iinfo(np.int64).max
_CANONICAL_INT: Final = r"0|[1-9][0-9]{0,18}"
_TRUE: Final = frozenset({"1", "true", "t", "yes", "y"})
_FALSE: Final = frozenset({"0", "false", "f", "no", "n"})

ObjArray = npt.NDArray[np.object_]
BoolArray = npt.NDArray[np.bool_]


class RawReadError(StorageError, ValueError):
    """A raw input file cannot be read as a table (missing, undecodable, malformed,
    lacking a column); the message names the file and, where known, the line."""


@dataclass(frozen=True)
class RawTable:
    """One input file as text. N rows, blank lines already skipped.

    ``frame`` holds every column as ``str`` (leading/trailing whitespace stripped, ``""`` =
    missing); ``line[r]`` is row r's 1-based line number in a text file (header counted),
    or its 1-based row number in a parquet file.
    """

    path: Path
    frame: pd.DataFrame  # (N, columns) str
    line: npt.NDArray[np.int64]  # (N,)
    blank_lines: int

    @property
    def n_rows(self) -> int:
        return len(self.line)

    def require(self, names: Iterable[str | None]) -> None:
        """Raise `RawReadError` naming every column of ``names`` (None skipped) the file lacks."""
        missing = [n for n in names if n is not None and n not in self.frame.columns]
        if missing:
            raise RawReadError(
                f"{self.path}: no column {', '.join(map(repr, missing))} "
                f"(columns: {list(self.frame.columns)})"
            )

    def column(self, name: str) -> ObjArray:
        """(N,) text values of column ``name``."""
        self.require([name])
        return self.frame[name].to_numpy(dtype=object)


def resolve_format(
    path: Path, fmt: Format = "auto", sep: str | None = None
) -> tuple[Literal["text", "parquet"], str | None]:
    """("parquet", None) or ("text", separator) for a file: an explicit ``sep`` wins, then
    the format ("csv" -> ",", "tsv" -> tab), then the extension (.csv, .tsv/.tab, .dat ->
    "::", .parquet/.pq)."""
    ext = path.suffix.lower()
    if fmt == "parquet" or (fmt == "auto" and ext in _PARQUET_EXT and sep is None):
        return "parquet", None
    if sep is not None:
        if sep == "":
            raise RawReadError(f"{path}: the separator must not be empty")
        return "text", sep
    if fmt in ("csv", "tsv"):
        return "text", "," if fmt == "csv" else "\t"
    if ext in _EXT_SEP:
        return "text", _EXT_SEP[ext]
    raise RawReadError(
        f"{path}: cannot tell the format from the extension {ext!r}; give a separator "
        "or a format (csv, tsv, parquet)"
    )


def read_raw_table(
    path: Path,
    *,
    fmt: Format = "auto",
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
) -> RawTable:
    """Read a delimited text or parquet file as text (see `RawTable`).

    Without a header, columns are called ``names`` or, by default, by their 1-based
    position ("1", "2", ...); with one, ``names`` replaces the header's names. ``encoding``
    applies to text files. Rows whose fields are all empty (blank lines) are skipped and
    counted. Line numbers assume one record per line (a quoted field spanning lines shifts
    the ones after it). Raises `RawReadError` naming the file (and the line, for a row
    with the wrong number of fields).
    """
    path = Path(path)
    if not path.is_file():
        raise RawReadError(f"{path}: input file not found")
    kind, resolved_sep = resolve_format(path, fmt, sep)
    if kind == "parquet":
        frame, first_line = _read_parquet(path, names), 1
    else:
        assert resolved_sep is not None
        frame = _read_text(path, resolved_sep, header, names, encoding)
        first_line = 2 if header else 1
    frame = frame.fillna("")
    for name in frame.columns:
        frame[name] = frame[name].astype(str).str.strip()
    blank = (frame == "").all(axis=1).to_numpy() if len(frame.columns) else np.ones(0, bool)
    line = np.arange(first_line, first_line + len(frame), dtype=np.int64)
    frame = frame.loc[~blank].reset_index(drop=True)
    log.info("read %s: %d rows, columns %s", path, len(frame), list(frame.columns))
    return RawTable(path=path, frame=frame, line=line[~blank], blank_lines=int(blank.sum()))


def _read_text(
    path: Path, sep: str, header: bool, names: Sequence[str] | None, encoding: str
) -> pd.DataFrame:
    # Multi-character separators are regular expressions to pandas and need its Python
    # engine; escaping keeps "::" or "||" literal.
    multi = len(sep) > 1
    try:
        frame = pd.read_csv(
            path,
            sep=re.escape(sep) if multi else sep,
            engine="python" if multi else "c",
            header=0 if header else None,
            names=list(names) if names is not None else None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,  # keeps row r on line r (+1 for the header)
            encoding=encoding,
        )
    except UnicodeDecodeError as e:
        raise RawReadError(
            f"{path}: cannot decode as {encoding} ({e.reason} at byte {e.start}); "
            "give the right encoding, e.g. latin-1"
        ) from None
    except LookupError as e:
        raise RawReadError(f"{path}: unknown encoding {encoding!r} ({e})") from None
    except pd.errors.EmptyDataError:
        raise RawReadError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise RawReadError(f"{path}: {e}".strip()) from None
    if names is None and not header:
        frame.columns = [str(i + 1) for i in range(len(frame.columns))]
    return frame


def _to_text(col: pa.ChunkedArray, name: str, path: Path) -> pa.Array | pa.ChunkedArray:
    typ = col.type
    if pa.types.is_nested(typ):
        raise RawReadError(
            f"{path}: column {name!r} has type {typ}; store multi-valued columns as delimited text"
        )
    if pa.types.is_timestamp(typ):
        # Stored as UTC instants: becomes unix seconds, which the time decoder accepts.
        return pc.cast(pc.cast(col, pa.timestamp("s", tz=typ.tz), safe=False), pa.int64()).cast(
            pa.string()
        )
    if pa.types.is_floating(typ):
        vals = col.to_numpy().astype(np.float64)  # nulls -> NaN
        fin = np.isfinite(vals)
        if np.all(vals[fin] == np.floor(vals[fin])) and np.all(np.abs(vals[fin]) < 2**53):
            # Integer IDs that went through a float column (NaN = missing) read as "7".
            ints = pa.array(np.where(fin, vals, 0).astype(np.int64), mask=~fin)
            return pc.cast(ints, pa.string())
    return pc.cast(col, pa.string())


def _read_parquet(path: Path, names: Sequence[str] | None) -> pd.DataFrame:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise RawReadError(f"{path}: not a readable parquet file ({e})") from None
    if names is not None:
        if len(names) != table.num_columns:
            raise RawReadError(
                f"{path}: {len(names)} names given for {table.num_columns} columns "
                f"{table.column_names}"
            )
        table = table.rename_columns(list(names))
    texts = {n: _to_text(table.column(n), n, path) for n in table.column_names}
    return pd.DataFrame({n: c.to_pylist() for n, c in texts.items()}, dtype=object)


def parse_id_ints(values: ObjArray) -> tuple[BoolArray, npt.NDArray[np.int64]]:
    """(N,) text -> ((N,) is a canonical non-negative int64 literal, (N,) its value or 0).

    Canonical: decimal digits without sign or leading zeros, so "7" and "007" never merge.
    """
    text = pd.Series(values, dtype=object).astype(str)
    ok = text.str.fullmatch(_CANONICAL_INT).to_numpy(dtype=bool, copy=True)
    # 19-digit literals may still exceed int64.
    big = ok & (text.str.len().to_numpy() == 19)
    if big.any():
        ok[big] = [int(v) <= _INT64_MAX for v in text[big]]
    out = np.zeros(len(values), np.int64)
    if ok.any():
        out[ok] = text[ok].astype(np.int64).to_numpy()
    return ok, out


def parse_floats(values: ObjArray) -> tuple[npt.NDArray[np.float64], BoolArray]:
    """(N,) text -> ((N,) float64, NaN where missing or bad; (N,) bad = present but not a
    finite number)."""
    num = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
        np.float64, copy=True
    )
    bad = (values != "") & ~np.isfinite(num)
    num[~np.isfinite(num)] = np.nan
    return num, bad


def parse_times(
    values: ObjArray, fmt: TimeFormat = "auto"
) -> tuple[npt.NDArray[np.int64], BoolArray, Literal["unix", "iso"]]:
    """(N,) text -> ((N,) unix seconds (UTC), (N,) bad = present but unparsable, format used).

    "unix": numbers of seconds (decimals floored). "iso": ISO 8601 dates or date-times; no
    offset means UTC. "auto": "unix" when most present values are numbers, else "iso".
    """
    present = values != ""
    secs, bad_num = parse_floats(values)
    if fmt == "auto":
        n_num = int((present & ~bad_num).sum())
        fmt = "unix" if n_num * 2 > int(present.sum()) else "iso"
    out = np.zeros(len(values), np.int64)
    if fmt == "unix":
        ok = present & ~bad_num & (np.abs(np.nan_to_num(secs)) < 2**62)
        out[ok] = np.floor(secs[ok]).astype(np.int64)
    else:
        parsed = pd.to_datetime(
            pd.Series(values, dtype=object).where(present, None),
            format="ISO8601",
            utc=True,
            errors="coerce",
        )
        ok = present & parsed.notna().to_numpy()
        out[ok] = parsed[ok].to_numpy(dtype="datetime64[s]").astype(np.int64)
    return out, present & ~ok, fmt


def parse_labels(values: ObjArray) -> tuple[npt.NDArray[np.int8], BoolArray]:
    """(N,) text -> ((N,) 1 positive / 0 negative, (N,) bad = present but not a label).

    Positive: a non-zero number or true/t/yes/y; negative: 0, false/f/no/n (any case).
    """
    low = pd.Series(values, dtype=object).astype(str).str.lower()
    num, bad_num = parse_floats(values)
    pos = low.isin(_TRUE).to_numpy() | (~bad_num & (np.nan_to_num(num) != 0))
    neg = low.isin(_FALSE).to_numpy() | (~bad_num & (values != "") & (np.nan_to_num(num) == 0))
    return pos.astype(np.int8), (values != "") & ~pos & ~neg


def split_multi(values: ObjArray, sep: str) -> list[list[str]]:
    """(N,) text -> N lists of the non-empty, stripped parts of each value split on ``sep``."""
    return [[p.strip() for p in str(v).split(sep) if p.strip()] for v in values]

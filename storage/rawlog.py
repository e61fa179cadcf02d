"""Raw input files for import as whole tables (attribute tables: one row per entity), read
through the streaming reader (`storage.rawstream`) as stripped text with each row's line
number, plus the object-array forms of the decoders (`storage.rawparse`) and the
multi-value splitter.

Every value is read as text first so that a bad value can be reported (file, line, column)
instead of failing the whole read. Interaction logs, which can be any size, are read chunk
by chunk with `storage.rawstream.open_raw` instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from storage.rawparse import (
    TIME_BAD,
    TIME_OUT_OF_RANGE,
    TimeDecoder,
    TimeFormat,
    TimeUnit,
    float_values,
    id_ints,
    label_values,
)
from storage.rawstream import (
    BLOCK_BYTES,
    Format,
    RawReadError,
    Rejected,
    open_raw,
    resolve_format,
)

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

ObjArray = npt.NDArray[np.object_]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RawTable:
    """One input file as text. N rows: blank lines and rejected records already out.

    ``frame`` holds every column as ``str`` (leading/trailing whitespace stripped, ``""`` =
    missing); ``line[r]`` is row r's 1-based physical line in a text file (header counted),
    or its 1-based row number in a parquet file. ``rejected`` are the records that did not
    split into the columns (each with the lines it spans).
    """

    path: Path
    frame: pd.DataFrame  # (N, columns) str
    line: npt.NDArray[np.int64]  # (N,)
    blank_lines: int
    rejected: list[Rejected] = field(default_factory=list)
    header_lines: int = 0
    hint: str = ""  # why a column may be missing ("the file looks '|'-separated")

    @property
    def n_rows(self) -> int:
        return len(self.line)

    @property
    def rejected_lines(self) -> int:
        """Physical lines of the rejected records."""
        return sum(r.n_lines for r in self.rejected)

    def require(self, names: Iterable[str | None]) -> None:
        """Raise `RawReadError` naming every column of ``names`` (None skipped) the file lacks."""
        missing = [n for n in names if n is not None and n not in self.frame.columns]
        if missing:
            raise RawReadError(
                f"{self.path}: no column {', '.join(map(repr, missing))} "
                f"(columns: {list(self.frame.columns)}){self.hint}"
            )

    def column(self, name: str) -> ObjArray:
        """(N,) text values of column ``name``."""
        self.require([name])
        return self.frame[name].to_numpy(dtype=object)


def read_raw_table(
    path: Path,
    *,
    fmt: Format = "auto",
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quote: str | None = '"',
    block_bytes: int = BLOCK_BYTES,
) -> RawTable:
    """Read a delimited text or parquet file whole, as text (see `RawTable`, and
    `storage.rawstream.open_raw` for the options). Raises `RawReadError` naming the file
    (and line) when it cannot be read as a table at all."""
    source = open_raw(
        Path(path),
        fmt=fmt,
        sep=sep,
        header=header,
        names=names,
        encoding=encoding,
        quote=quote,
        block_bytes=block_bytes,
    )
    tables, lines, rejected, blank = [], [], [], 0
    for chunk in source.chunks():
        tables.append(chunk.table)
        lines.append(chunk.line)
        rejected += chunk.rejected
        blank += chunk.blank_lines
    schema = pa.schema([(c, pa.string()) for c in source.columns])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    frame = pd.DataFrame(
        {c: table.column(c).to_numpy(zero_copy_only=False) for c in source.columns}, dtype=object
    )
    line = np.concatenate(lines) if lines else np.zeros(0, np.int64)
    log.info("read %s: %d rows, columns %s", path, len(frame), source.columns)
    return RawTable(
        path=Path(path),
        frame=frame,
        line=line,
        blank_lines=blank,
        rejected=rejected,
        header_lines=source.header_lines,
        hint=source.hint(),
    )


def parse_id_ints(values: ObjArray) -> tuple[BoolArray, npt.NDArray[np.int64]]:
    """(N,) text -> ((N,) is a canonical non-negative int64 literal, (N,) its value or 0).

    Canonical: decimal digits without sign or leading zeros, so "7" and "007" never merge.
    """
    return id_ints(values)  # type: ignore[arg-type]


def parse_floats(values: ObjArray) -> tuple[npt.NDArray[np.float64], BoolArray]:
    """(N,) text -> ((N,) float64, NaN where missing or bad; (N,) bad = present but not a
    finite number)."""
    return float_values(values)  # type: ignore[arg-type]


def parse_times(
    values: ObjArray, fmt: TimeFormat = "auto", unit: TimeUnit = "auto"
) -> tuple[npt.NDArray[np.int64], BoolArray, Literal["unix", "iso"]]:
    """(N,) text -> ((N,) unix seconds (UTC), (N,) bad = present but unparsable or outside
    the plausible range, format used). See `storage.rawparse.TimeDecoder`."""
    decoder = TimeDecoder(fmt, unit)
    secs, status = decoder.decode(values)  # type: ignore[arg-type]
    used: Literal["unix", "iso"] = "iso" if decoder.fmt == "iso" else "unix"
    return secs, (status == TIME_BAD) | (status == TIME_OUT_OF_RANGE), used


def parse_labels(values: ObjArray) -> tuple[npt.NDArray[np.int8], BoolArray]:
    """(N,) text -> ((N,) 1 positive / 0 negative, (N,) bad = present but not a label).

    Positive: a non-zero number or true/t/yes/y; negative: 0, false/f/no/n (any case).
    """
    return label_values(values)  # type: ignore[arg-type]


def split_multi(values: ObjArray, sep: str) -> list[list[str]]:
    """(N,) text -> N lists of the non-empty, stripped parts of each value split on ``sep``."""
    return [[p.strip() for p in str(v).split(sep) if p.strip()] for v in values]

"""Streaming reader of raw input files: a delimited text file (any separator, sniffed
from the first lines when neither given nor implied by the extension) or a parquet file,
yielded as chunks of stripped text columns with each row's physical line number.

Memory is bounded by the block size (`BLOCK_BYTES`), whatever the file size. Every
physical line is accounted for: a chunk carries its rows, its blank lines and the records
it could not split into the expected fields (`Rejected`: wrong field count, a quoted field
running over several lines, bytes that do not decode), each with the lines it spans.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.rawparse import present, trim
from storage.rawtext import (
    LineParser,
    RawChunk,
    RawFileMissingError,
    RawReadError,
    Rejected,
    RejectReason,
    TextFile,
    check_encoding,
    unique_names,
)

__all__ = [
    "BLOCK_BYTES",
    "Format",
    "RawChunk",
    "RawReadError",
    "RawSource",
    "RejectReason",
    "Rejected",
    "open_raw",
    "resolve_format",
    "sniff_separator",
]

log = logging.getLogger(__name__)

Format = Literal["auto", "csv", "tsv", "parquet"]

BLOCK_BYTES: Final = 16 << 20  # one chunk of text: ~0.5M log lines
_PARQUET_BATCH: Final = 1 << 18
_SNIFF_LINES: Final = 50
# Tried in this order; the first that splits every sampled line into the same number (>= 2)
# of fields wins ("::" first: MovieLens' genres hold "|").
_SNIFF_SEPS: Final = ("::", "\t", ",", "|", ";")
_EXT_SEP: Final = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".dat": "::"}
_PARQUET_EXT: Final = frozenset({".parquet", ".pq"})


def resolve_format(
    path: Path, fmt: Format = "auto", sep: str | None = None
) -> tuple[Literal["text", "parquet"], str | None]:
    """("parquet", None) or ("text", separator) for a file: an explicit ``sep`` wins, then
    the format ("csv" -> ",", "tsv" -> tab), then the extension (.csv, .tsv/.tab, .dat ->
    "::", .parquet/.pq). Raises `RawReadError` when none applies (see `sniff_separator`)."""
    ext = path.suffix.lower()
    if fmt == "parquet" or (fmt == "auto" and ext in _PARQUET_EXT and sep is None):
        return "parquet", None
    if sep is not None:
        if sep == "" or any(c in sep for c in "\r\n"):
            raise RawReadError(f"{path}: the separator {sep!r} must be non-empty, one line")
        return "text", sep
    if fmt in ("csv", "tsv"):
        return "text", "," if fmt == "csv" else "\t"
    if ext in _EXT_SEP:
        return "text", _EXT_SEP[ext]
    raise RawReadError(
        f"{path}: cannot tell the format from the extension {ext!r}; give a separator "
        "or a format (csv, tsv, parquet)"
    )


def sniff_separator(sample: str) -> tuple[str, int] | None:
    """(separator, fields per line) that splits every non-blank line of ``sample`` (the
    file's first lines) into the same number >= 2 of fields, or None."""
    lines = [ln for ln in sample.splitlines() if ln.strip()][:_SNIFF_LINES]
    for sep in _SNIFF_SEPS:
        counts = {ln.count(sep) for ln in lines}
        if len(counts) == 1 and (n := counts.pop()) >= 1:
            return sep, n + 1
    return None


class RawSource:
    """An input file opened for streaming: its columns are known, its rows come from
    `chunks` (once). Use `open_raw`."""

    def __init__(
        self,
        path: Path,
        kind: Literal["text", "parquet"],
        sep: str | None,
        columns: list[str],
        header_lines: int,
        sample: str,
    ) -> None:
        self.path, self.kind, self.sep = path, kind, sep
        self.columns, self.header_lines, self._sample = columns, header_lines, sample
        self._reader: Iterator[RawChunk] | None = None

    def hint(self) -> str:
        """'; the file looks '|'-separated' when another separator fits, else ''."""
        guess = sniff_separator(self._sample) if self.kind == "text" else None
        if guess is None or guess[0] == self.sep:
            return ""
        return f"; the file looks {guess[0]!r}-separated ({guess[1]} fields): give that separator"

    def require(self, names: Sequence[str | None]) -> None:
        """Raise `RawReadError` naming every column of ``names`` (None skipped) the file lacks."""
        missing = [n for n in names if n is not None and n not in self.columns]
        if missing:
            raise RawReadError(
                f"{self.path}: no column {', '.join(map(repr, missing))} "
                f"(columns: {self.columns}){self.hint()}"
            )

    def chunks(self) -> Iterator[RawChunk]:
        if self._reader is None:
            raise RawReadError(f"{self.path}: chunks() may be read once")
        reader, self._reader = self._reader, None
        return reader


def open_raw(
    path: Path,
    *,
    fmt: Format = "auto",
    sep: str | None = None,
    header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quote: str | None = '"',
    block_bytes: int = BLOCK_BYTES,
) -> RawSource:
    """Open ``path`` for streaming (see `RawSource`, `RawChunk`).

    Text: records are lines; a field may be quoted with ``quote`` (None: no quoting; never
    with a multi-character separator) and then hold the separator, but a quote left open
    makes a record of every line up to its closing quote, rejected as one
    'multiline_record' counting all its lines. Without a header, columns are ``names`` or
    "1", "2", ... by position; with one, ``names`` replaces the header's. Raises
    `RawReadError` naming the file (and line) when it cannot be read as a table at all.
    """
    path = Path(path)
    if not path.is_file():
        raise RawFileMissingError(f"{path}: input file not found")
    try:
        return _open(path, fmt, sep, header, names, encoding, quote, block_bytes)
    except OSError as e:  # permission denied, I/O error: still one clear line
        raise RawReadError(f"{path}: cannot read ({e.strerror or e})") from None


def _open(
    path: Path,
    fmt: Format,
    sep: str | None,
    header: bool,
    names: Sequence[str] | None,
    encoding: str,
    quote: str | None,
    block_bytes: int,
) -> RawSource:
    if fmt == "auto" and sep is None and path.suffix.lower() not in (*_EXT_SEP, *_PARQUET_EXT):
        kind, resolved = "text", None  # sniffed below
    else:
        kind, resolved = resolve_format(path, fmt, sep)
    if kind == "parquet":
        return _open_parquet(path, names)
    check_encoding(path, encoding)
    if quote is not None and (len(quote) != 1 or quote in "\r\n"):
        raise RawReadError(f"{path}: the quote {quote!r} must be one character (or none)")
    text = TextFile(path, encoding, block_bytes)
    sample = text.sample()
    if resolved is None:
        guess = sniff_separator(sample)
        if guess is None:
            raise RawReadError(
                f"{path}: cannot tell the separator from the extension or the first lines "
                f"(tried {', '.join(map(repr, _SNIFF_SEPS))}); give a separator or a format"
            )
        resolved = guess[0]
        log.info("%s: sniffed separator %r", path, resolved)
    if quote is not None and quote in resolved:
        raise RawReadError(f"{path}: the separator {resolved!r} contains the quote {quote!r}")
    parser = LineParser(path, resolved, quote if len(resolved.encode()) == 1 else None, encoding)
    columns = parser.header(text, header, names)
    source = RawSource(path, "text", resolved, columns, int(header), sample)
    if len(columns) == 1 and source.hint():
        raise RawReadError(
            f"{path}: every line reads as one column with separator {resolved!r}{source.hint()}"
        )
    source._reader = parser.chunks(text, columns, source.header_lines, source.hint)
    return source


def _to_text(col: pa.Array, name: str, path: Path) -> pa.Array:
    typ = col.type
    if pa.types.is_nested(typ):
        raise RawReadError(
            f"{path}: column {name!r} has type {typ}; store multi-valued columns as delimited text"
        )
    if pa.types.is_timestamp(typ):
        # Stored as UTC instants: becomes unix seconds, which the time decoder accepts.
        secs = pc.cast(pc.cast(col, pa.timestamp("s", tz=typ.tz), safe=False), pa.int64())
        return pc.cast(secs, pa.string())
    if pa.types.is_floating(typ):
        vals = np.asarray(col.to_numpy(zero_copy_only=False), np.float64)  # nulls -> NaN
        fin = np.isfinite(vals)
        if np.all(vals[fin] == np.floor(vals[fin])) and np.all(np.abs(vals[fin]) < 2**53):
            # Integer IDs that went through a float column (NaN = missing) read as "7".
            ints = pa.array(np.where(fin, vals, 0).astype(np.int64), mask=~fin)
            return pc.cast(ints, pa.string())
    return pc.cast(col, pa.string())


def _open_parquet(path: Path, names: Sequence[str] | None) -> RawSource:
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except (pa.ArrowInvalid, OSError) as e:
        raise RawReadError(f"{path}: not a readable parquet file ({e})") from None
    columns = list(schema.names)
    if names is not None:
        if len(names) != len(columns):
            raise RawReadError(
                f"{path}: {len(names)} names given for {len(columns)} columns {columns}"
            )
        columns = list(names)
    for field, name in zip(schema, columns, strict=True):
        if pa.types.is_nested(field.type):
            raise RawReadError(
                f"{path}: column {name!r} has type {field.type}; store multi-valued "
                "columns as delimited text"
            )
    source = RawSource(path, "parquet", None, unique_names(columns), 0, "")
    source._reader = _parquet_chunks(pf, path, source.columns)
    return source


def _parquet_chunks(pf: pq.ParquetFile, path: Path, columns: list[str]) -> Iterator[RawChunk]:
    row0 = 1
    try:
        batches = pf.iter_batches(batch_size=_PARQUET_BATCH)
        for batch in batches:
            texts = [
                trim(pc.fill_null(_to_text(c, n, path), ""))
                for c, n in zip(batch.columns, columns, strict=True)
            ]
            table = pa.table(texts, names=columns)
            empty = np.ones(table.num_rows, bool)
            for col in texts:
                empty &= ~present(col)
            line = np.arange(row0, row0 + table.num_rows, dtype=np.int64)
            row0 += table.num_rows
            keep = pa.array(~empty)
            yield RawChunk(table.filter(keep), line[~empty], int(empty.sum()), [], len(line))
    except (pa.ArrowInvalid, OSError) as e:
        raise RawReadError(f"{path}: not a readable parquet file ({e})") from None
    finally:
        pf.close()

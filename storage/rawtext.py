"""The text side of the raw input reader: a delimited file's bytes in blocks of whole
lines, split into fields by Arrow's CSV parser, with every physical line accounted for
(row, blank line, or part of a `Rejected` record). Opened through `storage.rawstream`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from storage.errors import StorageError
from storage.rawparse import present, trim

__all__ = [
    "LineParser",
    "RawChunk",
    "RawFileMissingError",
    "RawReadError",
    "RejectReason",
    "Rejected",
    "TextFile",
    "check_encoding",
    "unique_names",
]

RejectReason = Literal["wrong_field_count", "multiline_record", "undecodable"]

MAX_LINE: Final = 256 << 20  # a longer line is not a record but a broken file
SNIFF_BYTES: Final = 64 << 10
_NEWLINE: Final = r"\r\n|\r|\n"  # what Arrow ends a record with
_NEWLINE_RE: Final = re.compile(_NEWLINE)
_SUBSTITUTES: Final = (b"\x1f", b"\x1e", b"\x1d", b"\x1c", b"\x01", b"\x02")
_EXCERPT: Final = 80
_QUOTE_SPAN: Final = 4  # blocks a quoted field may run over before it is cut


class RawReadError(StorageError, ValueError):
    """A raw input file cannot be read as a table (missing, undecodable, malformed,
    lacking a column); the message names the file and, where known, the line."""


class RawFileMissingError(RawReadError, FileNotFoundError):
    """A raw input file that does not exist (the command line exits "not found")."""


@dataclass(frozen=True)
class Rejected:
    """A record that does not split into the table's fields."""

    line: int  # its first physical line, 1-based
    n_lines: int  # physical lines it spans (> 1: a quote ran over line ends)
    reason: RejectReason
    text: str  # an excerpt


@dataclass(frozen=True)
class RawChunk:
    """A run of consecutive lines (or parquet rows). N rows."""

    table: pa.Table  # (N, columns) string, stripped; "" = missing
    line: npt.NDArray[np.int64]  # (N,) physical line (parquet: row) number, 1-based
    blank_lines: int  # skipped: empty, whitespace only, or every field empty
    rejected: list[Rejected]
    n_lines: int  # physical lines covered: rows + blank + rejected spans


def check_encoding(path: Path, encoding: str) -> None:
    """Raise `RawReadError` unless ``encoding`` exists and writes ASCII as ASCII."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise RawReadError(f"{path}: unknown encoding {encoding!r}") from None
    # Blocks are cut at b"\n": only encodings that write ASCII as ASCII survive the cut.
    probe = "\n\r,|\t:;\"'"
    if probe.encode(encoding, errors="replace") != probe.encode("ascii"):
        raise RawReadError(
            f"{path}: encoding {encoding!r} is not ASCII-compatible; convert the file to UTF-8"
        )


def _count_lines(data: bytes) -> int:
    """Physical lines in ``data``: ended by \\n, \\r\\n or a lone \\r, as Arrow ends records."""
    if not data:
        return 0
    ends = data.count(b"\n")
    if b"\r" in data:
        ends += data.count(b"\r") - data.count(b"\r\n")
    return ends + (0 if data.endswith((b"\n", b"\r")) else 1)


class TextFile:
    """The file's bytes: a sample of its first lines, its first line, then blocks of whole
    lines from a byte offset on."""

    def __init__(self, path: Path, encoding: str, block_bytes: int) -> None:
        self.path, self.encoding, self.block_bytes = path, encoding, max(block_bytes, 1)
        self.utf8 = codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
        with open(path, "rb") as f:
            self._head = f.read(max(SNIFF_BYTES, 4096))
        self.bom = len(codecs.BOM_UTF8) if self._head.startswith(codecs.BOM_UTF8) else 0
        if not self.utf8:
            self.bom = 0

    def sample(self) -> str:
        head = self._head[self.bom :]
        if not head.strip():
            raise RawReadError(f"{self.path}: the file is empty")
        if len(self._head) >= SNIFF_BYTES:  # its last line may be cut
            head = head[: max(head.rfind(b"\n"), 0)]
        return head.decode(self.encoding, errors="replace")

    def first_line(self) -> tuple[bytes, int]:
        """(the first line without its end, the byte offset of the second line)."""
        head = b""
        with open(self.path, "rb") as f:
            f.seek(self.bom)
            # Read on only until the first line end: the header is one line, the file any size.
            while (more := f.read(SNIFF_BYTES)) and not any(c in head for c in (b"\n", b"\r")):
                head += more
                if len(head) > MAX_LINE:
                    raise RawReadError(f"{self.path}: line 1 is longer than {MAX_LINE >> 20} MiB")
            head += more
        ends = [i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0]
        end = min(ends) if ends else len(head)
        step = 2 if head[end : end + 2] == b"\r\n" else (1 if end < len(head) else 0)
        return head[:end], self.bom + end + step

    def blocks(self, start: int, quote: str | None) -> Iterator[bytes]:
        """Blocks of whole lines from byte ``start`` on, about ``block_bytes`` each.

        A block holding an odd number of ``quote`` characters ends inside a quoted field:
        it grows (up to `_QUOTE_SPAN` blocks) until the quote closes, so a record that
        runs over line ends is judged whole, whatever the block size.
        """
        q = quote.encode() if quote is not None else None
        with open(self.path, "rb") as f:
            f.seek(start)
            data = b""
            while more := f.read(self.block_bytes):
                data += more
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    if len(data) > MAX_LINE:
                        raise RawReadError(f"{self.path}: a line longer than {MAX_LINE >> 20} MiB")
                    continue
                open_quote = q is not None and data.count(q, 0, cut) % 2 == 1
                if open_quote and len(data) < _QUOTE_SPAN * self.block_bytes:
                    continue
                yield data[:cut]
                data = data[cut:]
            if data:
                yield data


class LineParser:
    """Splits blocks of lines into fields with Arrow's CSV parser (single-byte separator;
    a multi-character one is replaced by a byte the block does not hold)."""

    def __init__(self, path: Path, sep: str, quote: str | None, encoding: str) -> None:
        self.path, self.sep, self.quote, self.encoding = path, sep, quote, encoding
        self.sep8 = sep.encode("utf-8")
        self.start = 0

    def _delimit(self, data: bytes) -> tuple[bytes, str]:
        if len(self.sep8) == 1:
            return data, self.sep
        sub = next((b for b in _SUBSTITUTES if b not in data), None)
        if sub is None:
            raise RawReadError(f"{self.path}: holds every stand-in byte for {self.sep!r}")
        return data.replace(self.sep8, sub), sub.decode()

    def _read(self, data: bytes, columns: Sequence[str] | None, handler: object = None) -> pa.Table:
        """Parse ``data`` (UTF-8) into string ``columns``; None: its first line names them."""
        data, delimiter = self._delimit(data)
        read = pcsv.ReadOptions(
            use_threads=False,  # keeps InvalidRow.number exact
            block_size=len(data) + 1,  # one block: records are never cut by Arrow
            column_names=list(columns) if columns is not None else None,
        )
        parse = pcsv.ParseOptions(
            delimiter=delimiter,
            quote_char=self.quote if self.quote is not None else False,
            newlines_in_values=True,
            ignore_empty_lines=False,  # a blank line stays a record: line numbers hold
            invalid_row_handler=handler,
        )
        convert = pcsv.ConvertOptions(
            column_types={c: pa.string() for c in columns or ()},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        )
        return pcsv.read_csv(
            pa.BufferReader(data), read_options=read, parse_options=parse, convert_options=convert
        )

    def _fields(self, line: bytes, where: str) -> list[str]:
        """The fields of one line (read as a header row: every field stays text)."""
        try:
            text = line.decode(self.encoding).encode("utf-8")
            table = self._read(text + b"\n", None)
        except UnicodeDecodeError as e:
            raise RawReadError(
                f"{self.path}: {where}: cannot decode as {self.encoding} ({e.reason} at byte "
                f"{e.start}); give the right encoding, e.g. latin-1"
            ) from None
        except (pa.ArrowInvalid, ValueError) as e:
            raise RawReadError(f"{self.path}: {where}: cannot split into fields ({e})") from None
        return [name.strip() for name in table.column_names]

    def header(self, text: TextFile, header: bool, names: Sequence[str] | None) -> list[str]:
        """The columns; sets the byte offset where the data lines start."""
        first, self.start = text.first_line()
        if header:
            found = self._fields(first, "line 1 (header)")
            return unique_names(list(names) if names is not None else found)
        self.start = text.bom
        if names is not None:
            return unique_names(list(names))
        sample = next((ln for ln in text.sample().splitlines() if ln.strip()), "")
        n = len(self._fields(sample.encode(self.encoding, errors="replace"), "first line"))
        return [str(i + 1) for i in range(n)]

    def chunks(
        self, text: TextFile, columns: list[str], header_lines: int, hint: Callable[[], str]
    ) -> Iterator[RawChunk]:
        """The file's chunks; raises `RawReadError` when no line of the first block splits
        into the columns (a wrong separator, most likely)."""
        try:
            yield from self._chunks(text, columns, header_lines, hint)
        except OSError as e:
            raise RawReadError(f"{self.path}: cannot read ({e.strerror or e})") from None

    def _chunks(
        self, text: TextFile, columns: list[str], header_lines: int, hint: Callable[[], str]
    ) -> Iterator[RawChunk]:
        line0 = 1 + header_lines
        for i, block in enumerate(text.blocks(self.start, self.quote)):
            chunk = self._chunk(block, line0, columns)
            if i == 0 and chunk.table.num_rows == 0:
                wrong = [r for r in chunk.rejected if r.reason == "wrong_field_count"]
                if wrong:
                    raise RawReadError(
                        f"{self.path}: no line of the first {chunk.n_lines} has the "
                        f"{len(columns)} fields of {columns} (line {wrong[0].line}: "
                        f"{wrong[0].text}) with separator {self.sep!r}{hint()}"
                    )
            line0 += chunk.n_lines
            yield chunk

    def _decode(self, block: bytes, line0: int) -> tuple[bytes, list[Rejected]]:
        """``block`` as UTF-8; lines that do not decode become blank and are rejected."""
        utf8 = codecs.lookup(self.encoding).name in ("utf-8", "utf-8-sig")
        try:
            decoded = block.decode("utf-8" if utf8 else self.encoding)
            return (block if utf8 else decoded.encode("utf-8")), []
        except UnicodeDecodeError:
            pass
        out, rejected = [], []
        for i, line in enumerate(block.splitlines(keepends=True)):
            try:
                text = line.decode(self.encoding)
                out.append(line if utf8 else text.encode("utf-8"))
            except UnicodeDecodeError as e:
                why = (
                    f"cannot decode as {self.encoding} ({e.reason} at byte {e.start + 1} "
                    "of the line); give the right encoding, e.g. latin-1"
                )
                rejected.append(Rejected(line0 + i, 1, "undecodable", why))
                out.append(b"\n")
        return b"".join(out), rejected

    def _chunk(self, block: bytes, line0: int, columns: list[str]) -> RawChunk:
        n_lines = _count_lines(block)
        data, rejected = self._decode(block, line0)
        bad: list[tuple[int, int, str]] = []

        def skip(row: pcsv.InvalidRow) -> str:
            bad.append((row.number or 0, row.actual_columns, row.text))
            return "skip"

        try:
            table = self._read(data, columns, skip)
        except (pa.ArrowInvalid, ValueError) as e:
            last = line0 + n_lines - 1
            raise RawReadError(f"{self.path}: lines {line0}-{last}: {e}") from None
        quoted = self.quote is not None and self.quote.encode() in data
        spans, starts, is_bad, open_end = self._align(table, bad, line0, n_lines, quoted)
        # A record over several lines, or one whose quote is still open at the end.
        multi = spans > 1
        multi[-1:] |= open_end
        undecodable = {r.line for r in rejected}
        blank = 0
        bad_rows = zip(bad, spans[is_bad], starts[is_bad], multi[is_bad], strict=True)
        for (_, actual, text), span, start, over in bad_rows:
            if not text.strip():
                blank += int(span)
            elif over:
                rejected.append(Rejected(int(start), int(span), "multiline_record", _cut(text)))
            else:
                why = f"{actual} fields, expected {len(columns)}: {_cut(text)}"
                rejected.append(Rejected(int(start), 1, "wrong_field_count", why))
        table = pa.table([trim(c) for c in table.columns], names=columns)
        v_span, v_start, v_multi = spans[~is_bad], starts[~is_bad], multi[~is_bad]
        empty = np.ones(table.num_rows, bool)
        for col in table.columns:
            empty &= ~present(col)
        gone = np.isin(v_start, np.fromiter(undecodable, np.int64, len(undecodable)))
        blank += int((empty & ~gone & ~v_multi).sum())
        for r in np.flatnonzero(v_multi):
            text = self.sep.join(str(v) for v in table.slice(int(r), 1).to_pylist()[0].values())
            span = int(v_span[r])
            rejected.append(Rejected(int(v_start[r]), span, "multiline_record", _cut(text)))
        keep = ~empty & ~v_multi
        rejected.sort(key=lambda r: r.line)
        return RawChunk(table.filter(pa.array(keep)), v_start[keep], blank, rejected, n_lines)

    def _align(
        self,
        table: pa.Table,
        bad: list[tuple[int, int, str]],
        line0: int,
        n_lines: int,
        quoted: bool,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_], bool]:
        """(R,) lines spanned and first line of every record, (R,) whether it was rejected
        by the parser, whether the last record ends inside an open quote; R = parsed +
        rejected records, in file order."""
        bad.sort(key=lambda b: b[0])
        n = table.num_rows + len(bad)
        is_bad = np.zeros(n, bool)
        where = np.array([b[0] - 1 for b in bad], np.int64)
        if len(where) and (where.min() < 0 or where.max() >= n):
            raise RawReadError(f"{self.path}: lines {line0}-: the parser lost count of records")
        is_bad[where] = True
        spans = np.ones(n, np.int64)
        if quoted:  # only a quoted field can hold a line end
            breaks = np.zeros(table.num_rows, np.int64)
            for col in table.columns:
                found = pc.count_substring_regex(col, _NEWLINE).to_numpy()
                breaks += np.asarray(found, np.int64)
            spans[~is_bad] += breaks
        spans[is_bad] += np.array([len(_NEWLINE_RE.findall(b[2])) for b in bad], np.int64)
        excess = int(spans.sum()) - n_lines
        open_end = bool(n and 0 < excess < spans[-1])
        if open_end:
            # A quote still open at the end swallows the last line end into its value.
            spans[-1] -= excess
        if int(spans.sum()) != n_lines:
            raise RawReadError(
                f"{self.path}: lines {line0}-{line0 + n_lines - 1}: {int(spans.sum())} lines "
                f"parsed of {n_lines}; cannot tell the line of each record"
            )
        return spans, line0 + np.cumsum(spans) - spans, is_bad, open_end


def _cut(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique as pandas does ("a", "a.1", ...); empty ones numbered."""
    out: list[str] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        name = name or f"Unnamed: {i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}.{seen[name]}"
        seen.setdefault(name, 0)
        out.append(name)
    return out

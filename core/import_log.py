"""Streaming conversion of the interaction log: each chunk's rows are checked and decoded
into integers (ID codes, unix seconds, line numbers) as the chunk passes, and bad rows are
counted on the way. Memory grows with the kept rows' integers (~25 bytes a row) and the
distinct raw IDs, never with the file's text: a chunk of text is dropped once converted.

Then, on the whole log: unknown entities, the rules (rating threshold, labels, exact
duplicates, k-core) and the final ID codes, all on numpy integer arrays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core.import_config import InteractionSource
from core.import_report import FileReport, ReasonTally
from storage.rawparse import (
    TIME_BAD,
    TIME_MISSING,
    TIME_OUT_OF_RANGE,
    TimeDecoder,
    arrow_text,
    float_values,
    has_control_chars,
    label_values,
    present,
)
from storage.rawstream import BLOCK_BYTES, RawChunk, RawReadError, open_raw

__all__ = ["RULE_BELOW_MIN_RATING", "RULE_NEGATIVE_LABEL", "LogRows", "k_core_mask", "read_log"]

# What a rule will filter, decided per chunk but applied only after the strict-mode check,
# so that a row both below the threshold and bad still counts as bad.
RULE_NONE: Final = 0
RULE_BELOW_MIN_RATING: Final = 1
RULE_NEGATIVE_LABEL: Final = 2
_MAX_CODES: Final = 2**31 - 1

Int32 = npt.NDArray[np.int32]
Int64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


@dataclass
class LogRows:
    """The log's rows that passed every per-row check, in file order (N rows), and the
    bookkeeping of the whole file. ``keep`` (N,) is what later checks and rules leave."""

    path: Path
    user: Int32  # (N,) index into user_raw
    item: Int32  # (N,) index into item_raw
    user_raw: pa.Array  # (U0,) distinct raw user IDs (large_string), sorted
    item_raw: pa.Array  # (I0,)
    ts: Int64  # (N,) unix seconds, or the line number ("row_order")
    line: Int64  # (N,) physical line, 1-based
    rule: npt.NDArray[np.uint8]  # (N,) RULE_*
    kind: Literal["unix", "iso", "row_order"]
    unit: Literal["s", "ms", "us", "ns"] | None
    tally: ReasonTally
    rows_read: int
    blank_lines: int
    header_lines: int
    keep: Bools = field(init=False)
    rows_kept: int | None = field(init=False, default=None)  # set by take_kept

    def __post_init__(self) -> None:
        self.keep = np.ones(len(self.line), bool)

    def drop(
        self,
        mask: Bools,
        reason: str,
        *,
        invalid: bool = True,
        raw: Callable[[Int64], list[str]] | None = None,
    ) -> None:
        """Drop the still-kept rows of ``mask`` (N,) under ``reason``; ``raw`` gives the
        shown values of the first rows (by row index)."""
        hit = np.flatnonzero(mask & self.keep)
        if len(hit) == 0:
            return
        shown = raw(hit[: self.tally.max_examples]) if raw is not None else None
        self.tally.add(reason, self.line[hit], shown, invalid=invalid)
        self.keep[hit] = False

    def raw_ids(self, entity: Literal["user", "item"]) -> Callable[[Int64], list[str]]:
        """Row indices -> the raw IDs of their users (items), for examples."""
        codes, raw = (self.user, self.user_raw) if entity == "user" else (self.item, self.item_raw)
        return lambda rows: [str(v) for v in raw.take(pa.array(codes[rows])).to_pylist()]

    def apply_rules(self, k_core: int | None) -> int | None:
        """Drop rows by rule, in order: rating threshold, negative label, exact duplicate
        (user, item, time) but its first line, k-core; returns the k-core passes (None: off)."""
        self.drop(self.rule == RULE_BELOW_MIN_RATING, "below_min_rating", invalid=False)
        self.drop(self.rule == RULE_NEGATIVE_LABEL, "negative_label", invalid=False)
        kept = np.flatnonzero(self.keep)
        # lexsort is stable: among equal rows the earliest line comes first and stays.
        order = kept[np.lexsort((self.ts[kept], self.item[kept], self.user[kept]))]
        same = (
            (self.user[order[1:]] == self.user[order[:-1]])
            & (self.item[order[1:]] == self.item[order[:-1]])
            & (self.ts[order[1:]] == self.ts[order[:-1]])
        )
        dup = np.zeros(len(self.keep), bool)
        dup[order[1:][same]] = True
        del order, same
        self.drop(dup, "duplicate", invalid=False)
        if k_core is None:
            return None
        kept = np.flatnonzero(self.keep)
        core, rounds = k_core_mask(self.user[kept], self.item[kept], k_core)
        gone = np.zeros(len(self.keep), bool)
        gone[kept[~core]] = True
        self.drop(gone, "k_core", invalid=False)
        return rounds

    def take_kept(self) -> tuple[Int32, Int32, Int64]:
        """(K,) user codes, item codes and times of the kept rows; frees the per-row arrays
        (the log is then only good for `report`)."""
        keep = self.keep
        out = self.user[keep], self.item[keep], self.ts[keep]
        self.user = self.item = np.zeros(0, np.int32)
        self.ts = self.line = np.zeros(0, np.int64)
        self.rule = np.zeros(0, np.uint8)
        self.rows_kept = int(keep.sum())
        self.keep = np.zeros(0, bool)
        return out

    def report(self, sha: str) -> FileReport:
        kept = self.rows_kept if self.rows_kept is not None else int(self.keep.sum())
        return FileReport(
            role="interactions",
            file=str(self.path),
            sha256=sha,
            rows_read=self.rows_read,
            rows_kept=kept,
            rows_dropped=self.rows_read - kept,
            blank_lines=self.blank_lines,
            lines=self.header_lines + self.blank_lines + self.rows_read,
            invalid=self.tally.invalid,
            filtered=self.tally.filtered,
            missing_values={},
        )


def k_core_mask(
    users: npt.NDArray[np.integer], items: npt.NDArray[np.integer], k: int
) -> tuple[Bools, int]:
    """(N,) user and item codes (0..n-1) of interactions -> ((N,) mask of the k-core, passes
    that removed something): repeatedly drop the interactions of users and items with fewer
    than ``k`` kept interactions until none is dropped."""
    keep = np.ones(len(users), bool)
    rounds = 0
    n_u, n_i = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    while True:
        uc = np.bincount(users[keep], minlength=n_u)
        ic = np.bincount(items[keep], minlength=n_i)
        ok = keep & (uc[users] >= k) & (ic[items] >= k)
        if ok.sum() == keep.sum():
            return keep, rounds
        keep, rounds = ok, rounds + 1


class _Codes:
    """Raw IDs -> int32 codes across chunks: each chunk's distinct values are appended as
    they come; `finish` makes the codes index the sorted distinct raw IDs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dicts: list[pa.Array] = []
        self.size = 0

    def encode(self, values: pa.Array) -> Int32:
        enc = pc.dictionary_encode(values)
        if self.size + len(enc.dictionary) > _MAX_CODES:
            raise RawReadError(f"{self.path}: more than {_MAX_CODES} distinct IDs per chunk run")
        codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int32) + np.int32(self.size)
        self.dicts.append(enc.dictionary.cast(pa.large_string()))
        self.size += len(enc.dictionary)
        return codes

    def finish(self, codes: Int32) -> tuple[pa.Array, Int32]:
        """((U,) sorted distinct raw IDs, (N,) ``codes`` as indices into them)."""
        every = pa.concat_arrays(self.dicts) if self.dicts else pa.array([], pa.large_string())
        self.dicts = []
        distinct = pc.unique(every)
        distinct = distinct.take(pc.array_sort_indices(distinct))
        remap = pc.index_in(every, value_set=distinct).to_numpy(zero_copy_only=False)
        return distinct, remap.astype(np.int32)[codes]


def _empty(values: pa.Array) -> Bools:
    return ~present(values)


class _Chunks:
    """The per-chunk checks of one log, accumulating the rows that pass."""

    def __init__(self, src: InteractionSource, path: Path, tally: ReasonTally) -> None:
        self.src, self.tally = src, tally
        self.times = TimeDecoder(src.time_format, src.timestamp_unit)
        self.users, self.items = _Codes(path), _Codes(path)
        self.parts: dict[str, list[npt.NDArray[np.generic]]] = {
            k: [] for k in ("user", "item", "ts", "line", "rule")
        }

    def add(self, chunk: RawChunk) -> None:
        src, table, line = self.src, chunk.table, chunk.line
        ok = np.ones(len(line), bool)

        def drop(mask: Bools, reason: str, values: pa.Array | None = None) -> None:
            hit = mask & ok
            if hit.any():
                k = self.tally.max_examples
                shown = (
                    None if values is None else values.filter(pa.array(hit)).slice(0, k).to_pylist()
                )
                self.tally.add(reason, line[hit], shown)
                ok[hit] = False

        user = arrow_text(table.column(src.user_col))
        item = arrow_text(table.column(src.item_col))
        drop(_empty(user), "missing_user")
        drop(has_control_chars(user), "bad_user_id", user)
        drop(_empty(item), "missing_item")
        drop(has_control_chars(item), "bad_item_id", item)
        ts = line
        if src.time_col is not None:
            text = arrow_text(table.column(src.time_col))
            ts, status = self.times.decode(text)
            drop(status == TIME_MISSING, "missing_timestamp")
            drop(status == TIME_BAD, "bad_timestamp", text)
            drop(status == TIME_OUT_OF_RANGE, "timestamp_out_of_range", text)
        rule = np.zeros(len(line), np.uint8)
        if src.rating_col is not None:
            text = arrow_text(table.column(src.rating_col))
            rating, bad = float_values(text)
            drop(_empty(text), "missing_rating")
            drop(bad, "bad_rating", text)
            if src.min_rating is not None:
                rule[np.nan_to_num(rating, nan=-np.inf) < src.min_rating] = RULE_BELOW_MIN_RATING
        if src.label_col is not None:
            text = arrow_text(table.column(src.label_col))
            label, bad = label_values(text)
            drop(_empty(text), "missing_label")
            drop(bad, "bad_label", text)
            rule[(label == 0) & (rule == RULE_NONE)] = RULE_NEGATIVE_LABEL
        keep = pa.array(ok)
        self.parts["user"].append(self.users.encode(user.filter(keep)))
        self.parts["item"].append(self.items.encode(item.filter(keep)))
        self.parts["ts"].append(ts[ok])
        self.parts["line"].append(line[ok])
        self.parts["rule"].append(rule[ok])

    def column(self, name: str, dtype: type[np.generic]) -> npt.NDArray[np.generic]:
        got = self.parts.pop(name)
        return np.concatenate(got).astype(dtype, copy=False) if got else np.zeros(0, dtype)


def read_log(
    src: InteractionSource, max_examples: int, *, block_bytes: int = BLOCK_BYTES
) -> LogRows:
    """Stream the log of ``src`` through the per-row checks (see `LogRows`).

    Raises `RawReadError` when the file cannot be read as a table or lacks a column.
    """
    path = Path(src.path)
    source = open_raw(path, **src.read.reader_options(), block_bytes=block_bytes)
    source.require([src.user_col, src.item_col, src.time_col, src.rating_col, src.label_col])
    tally = ReasonTally(max_examples)
    chunks = _Chunks(src, path, tally)
    rows_read = blank = 0
    for chunk in source.chunks():
        tally.add_rejected(chunk.rejected)
        rows_read += len(chunk.line) + sum(r.n_lines for r in chunk.rejected)
        blank += chunk.blank_lines
        chunks.add(chunk)
    user_raw, user = chunks.users.finish(chunks.column("user", np.int32))  # type: ignore[arg-type]
    item_raw, item = chunks.items.finish(chunks.column("item", np.int32))  # type: ignore[arg-type]
    kind: Literal["unix", "iso", "row_order"] = "row_order"
    unit = None
    if src.time_col is not None:
        kind = "unix" if chunks.times.fmt == "unix" else "iso"
        if kind == "unix" and chunks.times.unit != "auto":
            unit = chunks.times.unit
    return LogRows(
        path=path,
        user=user,
        item=item,
        user_raw=user_raw,
        item_raw=item_raw,
        ts=chunks.column("ts", np.int64),  # type: ignore[arg-type]
        line=chunks.column("line", np.int64),  # type: ignore[arg-type]
        rule=chunks.column("rule", np.uint8),  # type: ignore[arg-type]
        kind=kind,
        unit=unit,
        tally=tally,
        rows_read=rows_read,
        blank_lines=blank,
        header_lines=source.header_lines,
    )

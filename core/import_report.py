"""What an import did with every input line: the report models stored in the snapshot, the
strict-mode error, and the per-file bookkeeping that produces them (`ReasonTally` for a
streamed log, `RowTracker` for a whole attribute table).

Counts are physical lines: a record that runs over k lines and is dropped counts k, so
``rows_read == rows_kept + rows_dropped`` and every dropped line is under one reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from storage.rawlog import RawTable
from storage.rawstream import Rejected

__all__ = [
    "DataImportError",
    "FileReport",
    "ImportReport",
    "ReasonCount",
    "ReasonTally",
    "Role",
    "RowTracker",
]

Role = Literal["interactions", "items", "users"]


class ReasonCount(BaseModel):
    """How many rows (or values) one reason concerns, with example row numbers."""

    count: int = Field(
        description="Physical lines (values, for bad attribute values) with this reason."
    )
    rows: list[int] = Field(description="Up to max_examples 1-based line / row numbers.")
    values: list[str] = Field(
        default_factory=list,
        description="The offending value (or an excerpt of the line) of each example row.",
    )


class FileReport(BaseModel):
    """What happened to the rows of one input file."""

    role: Role = Field(description="The file's part in the import.")
    file: str = Field(description="Path as given.")
    sha256: str = Field(description="Checksum of the file's bytes.")
    rows_read: int = Field(
        description="Data lines read: every physical line but the header and blank lines "
        "(parquet: rows)."
    )
    rows_kept: int = Field(description="Rows that made it into the snapshot.")
    rows_dropped: int = Field(
        0, description="Lines lost (rows_read - rows_kept): the sum of the reasons' counts."
    )
    blank_lines: int = Field(description="Blank lines skipped.")
    lines: int = Field(0, description="Physical lines in the file, header and blanks included.")
    invalid: dict[str, ReasonCount] = Field(
        description="Bad data by reason; 'strict' fails on any, 'lenient' drops the rows "
        "('bad_numeric:<col>' values become missing instead)."
    )
    filtered: dict[str, ReasonCount] = Field(
        description="Rows dropped by a rule: below_min_rating, negative_label, duplicate, k_core."
    )
    missing_values: dict[str, int] = Field(
        description="Attribute column -> rows without a usable value (features 0 there)."
    )


class ImportReport(BaseModel):
    """Counts and choices of one import (stored in snapshot.json as 'report')."""

    mode: Literal["strict", "lenient"]
    files: list[FileReport]
    timestamps: Literal["unix", "iso", "row_order"] = Field(
        description="How times were read; 'row_order' = the log's line numbers (no time column)."
    )
    timestamp_unit: Literal["s", "ms", "us", "ns"] | None = Field(
        None, description="Unit of unix times (given or detected); None for iso / row_order."
    )
    k_core_rounds: int | None = Field(description="Filtering passes until stable (None: off).")
    id_mapping: dict[str, Literal["identity", "dense"]] = Field(
        description="Per entity: raw integer IDs kept as-is, or dense 1..n in sorted raw order."
    )
    n_users: int
    n_items: int
    n_interactions: int
    n_categories: int
    users_without_attributes: int = Field(description="Users with zero features (no row).")
    items_without_attributes: int = Field(description="Items with zero features (no row).")
    users_without_interactions: int = Field(description="Catalogue-only users.")
    items_without_interactions: int = Field(description="Catalogue-only (cold) items.")
    user_features: list[str] = Field(description="Names of the profile vector's columns.")
    item_features: list[str] = Field(description="Names of the content vector's columns.")


# What to do about a reason, added to the strict-mode message.
_HINTS: Final = {
    "timestamp_out_of_range": "times must fall in 1970-01-01..2100-01-01 once read in their "
    "unit: give timestamp_unit (s, ms, us, ns) if the detected one is wrong",
    "multiline_record": "a quote left open runs over line ends: fix it, or read without "
    "quoting (quote: null / --quote none)",
    "wrong_field_count": "check the separator and the column names",
    "undecodable": "give the file's encoding (e.g. latin-1)",
    "bad_user_id": "IDs must not hold control or invisible characters",
    "bad_item_id": "IDs must not hold control or invisible characters",
    "bad_key": "IDs must not hold control or invisible characters",
}


def _example(r: ReasonCount) -> str:
    rows = ", ".join(map(str, r.rows)) + (", ..." if r.count > len(r.rows) else "")
    shown = [f"line {n}: {v!r}" for n, v in zip(r.rows, r.values, strict=False) if v]
    return f"(rows {rows})" + (f" e.g. {'; '.join(shown[:3])}" if shown else "")


class DataImportError(ValueError):
    """The inputs cannot make a snapshot (strict mode found bad rows, or no interaction is
    left); nothing was written. ``files`` holds the per-file reports."""

    def __init__(
        self, files: Sequence[FileReport], headline: str = "bad rows in strict mode"
    ) -> None:
        self.files = list(files)
        lines = []
        for f in self.files:
            if not f.invalid and not f.filtered:
                lines.append(f"{f.file} ({f.role}): {f.rows_read} data lines, {f.rows_kept} kept")
            for reason, r in {**f.invalid, **f.filtered}.items():
                hint = f"\n      ({_HINTS[reason]})" if reason in _HINTS else ""
                lines.append(f"{f.file} ({f.role}): {r.count} x {reason} {_example(r)}{hint}")
        super().__init__(f"import failed ({headline}); nothing written:\n  " + "\n  ".join(lines))


class ReasonTally:
    """Counts and the first examples (line, value) per reason, fed in file order."""

    def __init__(self, max_examples: int) -> None:
        self.max_examples = max_examples
        self.invalid: dict[str, ReasonCount] = {}
        self.filtered: dict[str, ReasonCount] = {}

    def add(
        self,
        reason: str,
        lines: npt.NDArray[np.int64],
        values: Sequence[str] | npt.NDArray[np.object_] | None = None,
        *,
        n_lines: int | None = None,
        invalid: bool = True,
    ) -> None:
        """Count the rows at ``lines`` in file order: one line each, or ``n_lines`` in all
        (``lines`` may then list only the first); ``values`` are aligned with ``lines``
        (only the first max_examples are read)."""
        if len(lines) == 0:
            return
        into = self.invalid if invalid else self.filtered
        got = into.setdefault(reason, ReasonCount(count=0, rows=[], values=[]))
        got.count += len(lines) if n_lines is None else n_lines
        room = self.max_examples - len(got.rows)
        if room > 0:
            got.rows += [int(n) for n in lines[:room]]
            if values is not None:  # per reason: always given, or never
                got.values += [_cut(str(v)) for v in list(values[:room])]

    def add_rejected(self, rejected: Sequence[Rejected]) -> None:
        """Count records the reader could not split; a record over k lines counts k and
        lists each of its lines (the excerpt shown on the first)."""
        for r in rejected:
            shown = min(r.n_lines, max(self.max_examples, 1))
            lines = np.arange(r.line, r.line + shown, dtype=np.int64)
            self.add(r.reason, lines, [r.text] + [""] * (shown - 1), n_lines=r.n_lines)


def _cut(text: str, size: int = 80) -> str:
    return text if len(text) <= size else text[: size - 3] + "..."


class RowTracker:
    """Which rows of one whole input file survive, and why the others were dropped."""

    def __init__(self, role: Role, raw: RawTable, sha: str, max_examples: int) -> None:
        self.role, self.raw, self.sha = role, raw, sha
        self.keep = np.ones(raw.n_rows, bool)
        self.tally = ReasonTally(max_examples)
        self.tally.add_rejected(raw.rejected)
        self.invalid, self.filtered = self.tally.invalid, self.tally.filtered
        self.missing: dict[str, int] = {}

    def drop(
        self,
        mask: npt.NDArray[np.bool_],
        reason: str,
        *,
        invalid: bool = True,
        values: npt.NDArray[np.object_] | None = None,
    ) -> None:
        """Drop the still-kept rows of ``mask`` (N,), counted under ``reason``; ``values``
        (N,) are the offending values, for the examples."""
        hit = mask & self.keep
        self.note(hit, reason, invalid=invalid, values=values)
        self.keep &= ~hit

    def note(
        self,
        hit: npt.NDArray[np.bool_],
        reason: str,
        *,
        invalid: bool = True,
        values: npt.NDArray[np.object_] | None = None,
    ) -> None:
        """Count the rows of ``hit`` (N,) under ``reason`` without dropping them."""
        shown = values[hit][: self.tally.max_examples] if values is not None else None
        self.tally.add(reason, self.raw.line[hit], shown, invalid=invalid)

    def report(self) -> FileReport:
        rows_read = self.raw.n_rows + self.raw.rejected_lines
        kept = int(self.keep.sum())
        return FileReport(
            role=self.role,
            file=str(self.raw.path),
            sha256=self.sha,
            rows_read=rows_read,
            rows_kept=kept,
            rows_dropped=rows_read - kept,
            blank_lines=self.raw.blank_lines,
            lines=self.raw.header_lines + self.raw.blank_lines + rows_read,
            invalid=self.invalid,
            filtered=self.filtered,
            missing_values=self.missing,
        )

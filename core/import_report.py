"""What an import did with every input row: the report models stored in the snapshot, the
strict-mode error, and the per-file row bookkeeping that produces them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from storage.rawlog import RawTable

__all__ = ["DataImportError", "FileReport", "ImportReport", "ReasonCount", "Role", "RowTracker"]

Role = Literal["interactions", "items", "users"]


class ReasonCount(BaseModel):
    """How many rows (or values) one reason concerns, with example row numbers."""

    count: int = Field(description="Rows (values, for bad attribute values) with this reason.")
    rows: list[int] = Field(description="Up to max_examples 1-based line / row numbers.")


class FileReport(BaseModel):
    """What happened to the rows of one input file."""

    role: Role = Field(description="The file's part in the import.")
    file: str = Field(description="Path as given.")
    sha256: str = Field(description="Checksum of the file's bytes.")
    rows_read: int = Field(description="Data rows read (blank lines excluded).")
    rows_kept: int = Field(description="Rows that made it into the snapshot.")
    blank_lines: int = Field(description="Blank lines skipped.")
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


class DataImportError(ValueError):
    """The inputs cannot make a snapshot (strict mode found bad rows, or no interaction is
    left); nothing was written. ``files`` holds the per-file reports."""

    def __init__(
        self, files: Sequence[FileReport], headline: str = "bad rows in strict mode"
    ) -> None:
        self.files = list(files)
        lines = [
            f"{f.file} ({f.role}): {r.count} x {reason} (rows {', '.join(map(str, r.rows))}"
            f"{', ...' if r.count > len(r.rows) else ''})"
            for f in self.files
            for reason, r in {**f.invalid, **f.filtered}.items()
        ]
        super().__init__(f"import failed ({headline}); nothing written:\n  " + "\n  ".join(lines))


class RowTracker:
    """Which rows of one input file survive, and why the others were dropped."""

    def __init__(self, role: Role, raw: RawTable, sha: str, max_examples: int) -> None:
        self.role, self.raw, self.sha, self.max_examples = role, raw, sha, max_examples
        self.keep = np.ones(raw.n_rows, bool)
        self.invalid: dict[str, ReasonCount] = {}
        self.filtered: dict[str, ReasonCount] = {}
        self.missing: dict[str, int] = {}

    def drop(self, mask: npt.NDArray[np.bool_], reason: str, *, invalid: bool = True) -> None:
        """Drop the still-kept rows of ``mask`` (N,), counted under ``reason``."""
        hit = mask & self.keep
        self.note(hit, reason, self.invalid if invalid else self.filtered)
        self.keep &= ~hit

    def note(self, hit: npt.NDArray[np.bool_], reason: str, into: dict[str, ReasonCount]) -> None:
        if hit.any():
            into[reason] = ReasonCount(
                count=int(hit.sum()), rows=self.raw.line[hit][: self.max_examples].tolist()
            )

    def report(self) -> FileReport:
        return FileReport(
            role=self.role,
            file=str(self.raw.path),
            sha256=self.sha,
            rows_read=self.raw.n_rows,
            rows_kept=int(self.keep.sum()),
            blank_lines=self.raw.blank_lines,
            invalid=self.invalid,
            filtered=self.filtered,
            missing_values=self.missing,
        )

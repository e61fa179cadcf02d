"""Typed parameters of `towerflow import`: which files to read and how, which raw column
plays which role, how attribute columns become features, and how strictly bad rows are
treated. Created at the edge (CLI, flow parameters) and passed down unchanged."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AttributeSource", "ImportConfig", "InteractionSource", "TableRead"]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TableRead(BaseModel):
    """How one input file is read (see `storage.rawlog.read_raw_table`)."""

    model_config = _FROZEN

    format: Literal["auto", "csv", "tsv", "parquet"] = Field(
        "auto",
        description="File format; 'auto' goes by the extension (.csv, .tsv/.tab, "
        ".dat = '::'-separated, .parquet/.pq).",
    )
    sep: str | None = Field(
        None,
        min_length=1,
        description="Field separator, any length (e.g. '::'); wins over format. None: from the "
        "format, else the extension, else sniffed from the first lines (the first of '::', "
        "tab, ',', '|', ';' that splits every one into the same number of fields).",
    )
    header: bool = Field(True, description="Whether the first line of a text file names columns.")
    names: tuple[str, ...] | None = Field(
        None,
        description="Column names (replace the header's); without header and names, columns "
        "are called by their 1-based position: '1', '2', ...",
    )
    encoding: str = Field(
        "utf-8", description="Text encoding of a text file, e.g. 'latin-1' (ASCII-compatible)."
    )
    quote: str | None = Field(
        '"',
        min_length=1,
        max_length=1,
        description="Quote character of a text file (a quoted field may hold the separator); "
        "None: no quoting. Never used with a multi-character separator. A record must be "
        "one line: a quote left open over line ends drops every line it spans.",
    )

    def reader_options(self) -> dict[str, Any]:
        """These options as the keywords of `storage.rawstream.open_raw` / `read_raw_table`."""
        return {
            "fmt": self.format,
            "sep": self.sep,
            "header": self.header,
            "names": self.names,
            "encoding": self.encoding,
            "quote": self.quote,
        }


class InteractionSource(BaseModel):
    """The interaction log: one row per (user, item, time) event."""

    model_config = _FROZEN

    path: str = Field(description="Interaction log file.")
    read: TableRead = Field(default_factory=TableRead, description="How to read the file.")
    user_col: str = Field("user_id", description="Column of the raw user ID (int or string).")
    item_col: str = Field("item_id", description="Column of the raw item ID (int or string).")
    time_col: str | None = Field(
        None,
        description="Column of the event time (unix time or ISO 8601); None: the row order "
        "(line number) serves as a monotone time.",
    )
    time_format: Literal["auto", "unix", "iso"] = Field(
        "auto",
        description="'unix' numbers, 'iso' 8601, or 'auto' (unix when most values of the "
        "first chunk are numbers).",
    )
    timestamp_unit: Literal["auto", "s", "ms", "us", "ns"] = Field(
        "auto",
        description="Unit of unix times. 'auto': by the median magnitude of the first "
        "chunk's values (< 1e11 s, < 1e14 ms, < 1e17 us, else ns), once per file. Times "
        "outside 1970-01-01..2100-01-01 after conversion are bad rows "
        "('timestamp_out_of_range').",
    )
    rating_col: str | None = Field(None, description="Column of an explicit rating (a number).")
    min_rating: float | None = Field(
        None, description="Keep only rows with rating >= this (implicit feedback from ratings)."
    )
    label_col: str | None = Field(
        None,
        description="Column of a 0/1 (or true/false) label; only positive rows are kept.",
    )

    @model_validator(mode="after")
    def _rating_for_threshold(self) -> Self:
        if self.min_rating is not None and self.rating_col is None:
            raise ValueError("min_rating needs rating_col")
        return self


class AttributeSource(BaseModel):
    """A user or item attribute table: one row per entity, keyed by its raw ID."""

    model_config = _FROZEN

    path: str = Field(description="Attribute table file.")
    read: TableRead = Field(default_factory=TableRead, description="How to read the file.")
    key: str = Field(description="Column of the raw entity ID (matches the interaction log).")
    categorical: tuple[str, ...] = Field(
        (), description="Single-valued categorical columns, one-hot encoded."
    )
    multi: dict[str, str] = Field(
        default_factory=dict,
        description="Multi-valued categorical columns -> value separator, e.g. {'genres': '|'}; "
        "multi-hot encoded.",
    )
    numeric: tuple[str, ...] = Field(
        (), description="Numeric columns, z-scored (missing -> 0, i.e. the mean)."
    )
    category: str | None = Field(
        None,
        description="Items only: column whose first value (split by its 'multi' separator when "
        "it is multi-valued) is the item's primary category.",
    )
    require: bool = Field(
        False,
        description="Interactions whose entity has no row here are bad rows ('unknown_user' / "
        "'unknown_item'); otherwise such entities get zero features.",
    )

    @model_validator(mode="after")
    def _distinct_columns(self) -> Self:
        cols = [*self.categorical, *self.multi, *self.numeric]
        twice = sorted({c for c in cols if cols.count(c) > 1})
        if twice:
            raise ValueError(f"columns listed under more than one feature kind: {twice}")
        if self.key in cols:
            raise ValueError(f"the key column {self.key!r} cannot also be a feature")
        if any(not s for s in self.multi.values()):
            raise ValueError("multi-valued separators must not be empty")
        return self


class ImportConfig(BaseModel):
    """Everything that determines an imported data snapshot (its id hashes this plus the
    input files' checksums)."""

    model_config = _FROZEN

    name: str = Field(
        "import",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="Prefix of the snapshot id.",
    )
    interactions: InteractionSource = Field(description="The interaction log.")
    items: AttributeSource | None = Field(None, description="Item attribute table.")
    users: AttributeSource | None = Field(None, description="User attribute table.")
    k_core: int | None = Field(
        None,
        ge=1,
        description="Keep only the k-core: repeatedly drop users and items with fewer than k "
        "interactions (and catalogue entries without any) until none is left to drop.",
    )
    mode: Literal["strict", "lenient"] = Field(
        "strict",
        description="'strict': any bad row or value fails the import and writes nothing; "
        "'lenient': bad rows are dropped and counted in the report.",
    )
    max_examples: int = Field(
        5, ge=0, description="Example row numbers the report keeps per reason."
    )

    @model_validator(mode="after")
    def _users_have_no_category(self) -> Self:
        if self.users is not None and self.users.category is not None:
            raise ValueError("users.category is not supported (only items have a category)")
        return self

"""Validation of new-item and retirement batches: pure functions with a reason per rejected
item, and the readers of item batch files (parquet, JSON, CSV).

Accepted item (create): ``{"item_id": int >= 0, "category": int32, "content": [C floats]}``
with C the CURRENT model's content size; every value finite and within float32. Unknown
fields are ignored. A category the model has not seen (or a negative one) is valid: the
item tower embeds it through the unknown-category row. Retirements are item IDs (or
objects with ``item_id``). Invalid items are rejected with a reason while the valid ones
proceed; a batch over the size limit is rejected whole (one reason per item would say the
same thing), and when an ID appears twice in a batch the last entry wins.

Reasons quote the offending input only through `excerpt` (escaped, at most 80 characters),
so an item cannot forge log lines or report rows. An event's file must be inside the
store's inbox (`resolve_inbox_path`), else the event is refused whole (`UnsafeItemsPath`).
"""

from __future__ import annotations

import json
import math
import os
import reprlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage import ItemUpsert

__all__ = [
    "MAX_FILE_ITEMS",
    "MAX_INLINE_ITEMS",
    "ItemsBatch",
    "Rejection",
    "UnsafeItemsPath",
    "Validated",
    "excerpt",
    "read_items_file",
    "resolve_inbox_path",
    "validate_retirements",
    "validate_upserts",
]

# Prefect events carry at most 1.5 MB; 500 items of 32 floats stay well under it.
MAX_INLINE_ITEMS: Final = 500
MAX_FILE_ITEMS: Final = 200_000
_INT64_MAX: Final = 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_F32_MAX: Final = float(np.finfo(np.float32).max)
_EXCERPT_CHARS: Final = 80  # the most of an input's text a reason or log line quotes
_PATH_CHARS: Final = 200  # ... of a path (event paths, file names in read errors)

Operation = Literal["create", "retire"]


class ItemsBatch(BaseModel):
    """One items event: what the `new-items` flow receives (from the event's payload)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str = Field(min_length=1, max_length=200, description="Idempotency key.")
    operation: Operation = Field("create", description="'create' (upsert) or 'retire'.")
    items: list[Any] | None = Field(None, description="Inline items (small batches).")
    path: str | None = Field(None, description="Parquet/JSON/CSV file of items (large batches).")

    @field_validator("event_id")
    @classmethod
    def _printable_id(cls, v: str) -> str:
        # The id is echoed into logs, artifacts and the catalogue: a control character
        # (newline, ESC, NUL) could forge log lines or terminal output.
        bad = sorted({c for c in v if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
        if bad:
            raise ValueError(
                f"event_id {excerpt(v, _EXCERPT_CHARS)} holds control characters "
                f"{[hex(ord(c)) for c in bad][:5]}"
            )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ItemsBatch:
        if (self.items is None) == (self.path is None):
            raise ValueError("give exactly one of `items` (inline) or `path` (a file)")
        return self


@dataclass(frozen=True)
class Rejection:
    """An item that was not accepted: its position in the batch, its ID if readable."""

    position: int
    item_id: str | None
    reason: str


@dataclass(frozen=True)
class Validated:
    """The accepted part of a batch and the reasons for the rest."""

    received: int
    upserts: list[ItemUpsert] = field(default_factory=list)
    retire_ids: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class UnsafeItemsPath(ValueError):
    """An event's ``path`` that does not name a file inside the store's inbox: absolute
    elsewhere, escaping with ``..`` or through a symlink, the inbox itself, a directory or
    other non-regular file, a NUL byte. Nothing is read for such an event."""


# Containers and long strings shown in part without building their whole repr().
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _EXCERPT_CHARS
_REPR.maxlong = 40


def excerpt(value: object, limit: int = _EXCERPT_CHARS) -> str:
    """Untrusted input as a reason or log line may quote it: its ``repr()`` (newlines,
    control characters and quotes escaped, so it cannot forge log lines or table rows),
    at most ``limit`` characters, then ``...`` when cut."""
    if isinstance(value, str):
        shown = repr(value[: limit + 1])
    elif isinstance(value, int) and value.bit_length() > 128:  # repr() may refuse it
        return f"<{value.bit_length()}-bit integer>"
    else:
        try:
            shown = _REPR.repr(value)
        except Exception:  # a hostile __repr__, or a huge int inside
            return f"<{type(value).__name__}>"
        # An object's repr may hold raw newlines (numpy arrays do): escape what is not printable.
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def resolve_inbox_path(inbox: Path, path: str, event_id: str) -> Path:
    """The real path of an event's items file: ``path`` relative to ``inbox``, or
    absolute; either way, once ``..`` and symlinks (of the file or any folder) are
    resolved it must name a regular file inside ``realpath(inbox)``. A file that does not
    exist there passes (reading it fails, as for any unreadable file). Raises
    `UnsafeItemsPath` naming the event and the path (escaped, truncated); the message
    never says where an outside path leads."""

    def unsafe(why: str) -> UnsafeItemsPath:
        return UnsafeItemsPath(
            f"event {excerpt(event_id, _PATH_CHARS)}: items path {excerpt(path, _PATH_CHARS)} "
            f"refused, {why}: an event's file must be inside the store's inbox "
            f"{excerpt(str(inbox), _PATH_CHARS)}; nothing was read or recorded"
        )

    if "\x00" in path:
        raise unsafe("it contains a NUL byte")
    try:
        base = Path(os.path.realpath(inbox))
        real = Path(os.path.realpath(Path(inbox) / path))
    except (OSError, ValueError) as e:
        raise unsafe(f"it cannot be resolved ({excerpt(str(e))})") from None
    if real == base:
        raise unsafe("it names the inbox itself")
    if not real.is_relative_to(base):
        raise unsafe("it leads outside the inbox (absolute, '..' or a symlink)")
    if real.exists() and not real.is_file():
        raise unsafe("it is not a regular file")
    return real


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _item_id(raw: object) -> int | str:
    """The ID as int, or the reason it is not a valid item ID."""
    if not _is_int(raw):
        return f"item_id must be an integer, got {type(raw).__name__} {excerpt(raw, 40)}"
    value = int(raw)  # type: ignore[call-overload]
    if not 0 <= value <= _INT64_MAX:
        return f"item_id must be in 0..2^63-1, got {excerpt(value, 40)}"
    return value


def _content(raw: object, dim: int) -> np.ndarray | str:
    if not isinstance(raw, list | tuple | np.ndarray):
        return f"content must be a list of {dim} numbers, got {type(raw).__name__}"
    if len(raw) != dim:
        return f"content must have {dim} values, got {len(raw)}"
    for i, v in enumerate(raw):
        if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
            return f"content[{i}] must be a number, got {type(v).__name__} {excerpt(v, 20)}"
        if not _finite_f32(v):
            return f"content[{i}] must be finite and within float32, got {excerpt(v, 20)}"
    return np.asarray(raw, np.float32)


def _finite_f32(v: int | float | np.integer | np.floating) -> bool:
    try:
        x = float(v)
    except OverflowError:  # an int beyond any float
        return False
    return math.isfinite(x) and abs(x) <= _F32_MAX


def _check_size(n: int, max_items: int) -> str | None:
    if n > max_items:
        return (
            f"batch has {n} items, the limit is {max_items}: split it, or send a file "
            f"reference (files take up to {MAX_FILE_ITEMS})"
        )
    return None


def _last_wins(ids: list[tuple[int, int]]) -> tuple[set[int], list[Rejection]]:
    """(position, id) pairs -> positions to keep and rejections of superseded entries."""
    last = {item_id: pos for pos, item_id in ids}
    rejected = [
        Rejection(pos, str(item_id), f"superseded by the entry at position {last[item_id]}")
        for pos, item_id in ids
        if last[item_id] != pos
    ]
    return set(last.values()), rejected


def _first_problem(item_id: int | str, category: object, content: np.ndarray | str) -> str | None:
    if isinstance(item_id, str):
        return item_id
    if not _is_int(category):
        shown = excerpt(category, 20)
        return f"category must be an integer, got {type(category).__name__} {shown}"
    if not _INT32_MIN <= int(category) <= _INT32_MAX:  # type: ignore[call-overload]
        return f"category must fit int32, got {excerpt(category, 20)}"
    return content if isinstance(content, str) else None


def validate_upserts(raw: Sequence[Any], content_dim: int, max_items: int) -> Validated:
    """Check each raw item of a create batch against a model with `content_dim` floats."""
    too_big = _check_size(len(raw), max_items)
    if too_big:
        return Validated(len(raw), rejected=[Rejection(-1, None, too_big)])
    rejected: list[Rejection] = []
    good: list[tuple[int, ItemUpsert]] = []
    for pos, item in enumerate(raw):
        if not isinstance(item, dict):
            reason = (
                f"expected an object with item_id, category, content; got {type(item).__name__}"
            )
            rejected.append(Rejection(pos, None, reason))
            continue
        raw_id = item.get("item_id")
        shown = None if raw_id is None else excerpt(raw_id, 40)
        missing = [k for k in ("item_id", "category", "content") if item.get(k) is None]
        if missing:
            rejected.append(Rejection(pos, shown, f"missing field(s): {', '.join(missing)}"))
            continue
        item_id = _item_id(raw_id)
        content = _content(item["content"], content_dim)
        problem = _first_problem(item_id, item["category"], content)
        if problem is not None:
            rejected.append(Rejection(pos, shown, problem))
            continue
        assert isinstance(item_id, int) and isinstance(content, np.ndarray)
        good.append((pos, ItemUpsert(item_id, int(item["category"]), content)))
    keep, superseded = _last_wins([(pos, it.item_id) for pos, it in good])
    return Validated(
        len(raw),
        upserts=[it for pos, it in good if pos in keep],
        rejected=sorted(rejected + superseded, key=lambda r: r.position),
    )


def validate_retirements(raw: Sequence[Any], max_items: int) -> Validated:
    """Check each raw entry of a retire batch: an item ID or an object with `item_id`."""
    too_big = _check_size(len(raw), max_items)
    if too_big:
        return Validated(len(raw), rejected=[Rejection(-1, None, too_big)])
    rejected: list[Rejection] = []
    ids: dict[int, int] = {}
    for pos, item in enumerate(raw):
        value = item.get("item_id") if isinstance(item, dict) else item
        item_id = _item_id(value)
        if isinstance(item_id, str):
            shown = None if value is None else excerpt(value, 40)
            rejected.append(Rejection(pos, shown, item_id))
        else:
            ids[item_id] = pos  # a repeated ID is one retirement
    return Validated(len(raw), retire_ids=sorted(ids), rejected=rejected)


def read_items_file(path: Path) -> list[Any]:
    """Items of a `.parquet`, `.json` (a list, or `{"items": [...]}`) or `.csv` file.

    CSV: columns `item_id`, `category` and either `content` (a JSON list per cell) or
    `content_0..content_{C-1}`. Raises `ValueError` naming the file when it cannot be read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return list(pq.read_table(path).to_pylist())
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            items = data.get("items") if isinstance(data, dict) else data
            if not isinstance(items, list):
                raise ValueError('expected a JSON list of items or {"items": [...]}')
            return items
        if suffix == ".csv":
            return _csv_items(pacsv.read_csv(path).to_pylist())
    except (OSError, ValueError, json.JSONDecodeError) as e:
        # Parse errors may quote the file (pyarrow's CSV reader shows the row): an excerpt.
        raise ValueError(
            f"cannot read items from {excerpt(str(path), _PATH_CHARS)}: {excerpt(str(e))}"
        ) from None  # the cause would print the whole message in tracebacks
    raise ValueError(
        f"{excerpt(str(path), _PATH_CHARS)}: unsupported item file type "
        f"{excerpt(suffix, 20)} (parquet, json, csv)"
    )


def _csv_items(rows: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for row in rows:
        item = {k: v for k, v in row.items() if not k.startswith("content")}
        if isinstance(row.get("content"), str):
            try:
                item["content"] = json.loads(row["content"])
            except json.JSONDecodeError:
                item["content"] = row["content"]  # rejected with its reason by validation
        else:
            cols = sorted((k for k in row if k.startswith("content_")), key=_column_number)
            if cols:
                item["content"] = [row[k] for k in cols]
        out.append(item)
    return out


def _column_number(name: str) -> int:
    suffix = name.removeprefix("content_")
    return int(suffix) if suffix.isdigit() else -1

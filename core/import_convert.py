"""Conversion of raw import files into snapshot arrays: parse and validate the log (streamed,
``core.import_log``) and the attribute tables, filter by rule, assign stored IDs, encode
features. Pure: reads the input files, writes nothing (``core.importing`` writes the
snapshot).

Choices: an exact duplicate (user, item, time) row is dropped, kept once and counted
('duplicate'); repeat interactions at other times are kept. Entities that appear only in
the log get zero features (and the 'unknown' item category) unless the attribute table is
``require``d; attribute rows of entities never interacted with stay as catalogue entries
(cold items / users), except under ``k_core``, which keeps only the core. Ratings and labels
only select rows; the snapshot stores no rating. IDs holding control or invisible
characters (NUL, tab, zero-width space, ...) are bad rows, never new entities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.import_config import AttributeSource, ImportConfig, TableRead
from core.import_log import LogRows, k_core_mask, read_log
from core.import_report import DataImportError, FileReport, ImportReport, Role, RowTracker
from storage.rawlog import RawTable, parse_floats, read_raw_table, split_multi
from storage.rawparse import arrow_text, has_control_chars, id_ints
from storage.rawstream import BLOCK_BYTES

__all__ = ["UNKNOWN_CATEGORY", "ImportedData", "assign_ids", "build_import", "k_core_mask"]

UNKNOWN_CATEGORY: Final = "unknown"
ObjArray = npt.NDArray[np.object_]


@dataclass
class _Attrs:
    """An attribute table: its rows' keys and parsed numeric columns (N rows)."""

    src: AttributeSource
    rows: RowTracker
    key: ObjArray  # (N,)
    numeric: dict[str, npt.NDArray[np.float64]]  # column -> (N,), NaN = missing

    @classmethod
    def read(
        cls, role: Role, src: AttributeSource, sha: str, cfg: ImportConfig, block_bytes: int
    ) -> _Attrs:
        raw = _read(src.path, src.read, block_bytes)
        raw.require([src.key, *src.categorical, *src.multi, *src.numeric, src.category])
        rows = RowTracker(role, raw, sha, cfg.max_examples)
        key = raw.column(src.key)
        rows.drop(key == "", "missing_key")
        rows.drop(has_control_chars(key), "bad_key", values=key)  # type: ignore[arg-type]
        rows.drop(pd.Series(key).duplicated().to_numpy() & (key != ""), "duplicate_key")
        numeric = {}
        for col in src.numeric:
            text = raw.column(col)
            numeric[col], bad = parse_floats(text)
            rows.note(bad & rows.keep, f"bad_numeric:{col}", values=text)
        return cls(src, rows, key, numeric)

    def kept_keys(self) -> pa.Array:
        """Distinct keys of the kept rows, as Arrow large strings."""
        return arrow_text(self.key[self.rows.keep]).cast(pa.large_string())


def _read(path: str, read: TableRead, block_bytes: int) -> RawTable:
    return read_raw_table(Path(path), **read.reader_options(), block_bytes=block_bytes)


def assign_ids(
    raw_ids: pa.Array | ObjArray,
) -> tuple[npt.NDArray[np.int64], Literal["identity", "dense"]]:
    """(n,) distinct raw IDs sorted as text -> ((n,) stored int64 IDs, rule used).

    "identity" when every raw ID is a canonical integer literal in int64 (outputs then speak
    the raw IDs); otherwise "dense": 1..n in the given (sorted raw-ID) order.
    """
    ok, values = id_ints(arrow_text(raw_ids))
    if ok.all():
        return values, "identity"
    return np.arange(1, len(ok) + 1, dtype=np.int64), "dense"


def _positions(sorted_keys: ObjArray, values: ObjArray) -> npt.NDArray[np.int64]:
    """Index of each of ``values`` in ``sorted_keys`` (sorted text), -1 where absent."""
    if len(sorted_keys) == 0:
        return np.full(len(values), -1, np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == values, pos, -1).astype(np.int64)


def _index_in(values: pa.Array, keys: pa.Array) -> npt.NDArray[np.int64]:
    """(n,) index of each of ``values`` in ``keys``, -1 where absent."""
    found = pc.index_in(values.cast(pa.large_string()), value_set=keys.cast(pa.large_string()))
    return np.asarray(pc.fill_null(found, -1).to_numpy(zero_copy_only=False), np.int64)


@dataclass(frozen=True)
class ImportedData:
    """A converted import, ready to write. U users, I items, N interactions."""

    user_id: npt.NDArray[np.int64]  # (U,)
    user_raw: pa.Array  # (U,) raw IDs as text
    profile: npt.NDArray[np.float32]  # (U, P), P >= 1
    item_id: npt.NDArray[np.int64]  # (I,)
    item_raw: pa.Array  # (I,)
    category: npt.NDArray[np.int32]  # (I,) into category_names
    content: npt.NDArray[np.float32]  # (I, C), C >= 1
    category_names: list[str]
    inter_user: npt.NDArray[np.int64]  # (N,) stored user IDs
    inter_item: npt.NDArray[np.int64]  # (N,) stored item IDs
    inter_ts: npt.NDArray[np.int64]  # (N,) unix seconds (or line numbers, see report)
    report: ImportReport


def _features(
    attrs: _Attrs | None, universe: pa.Array
) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.int64]]:
    """((n, d) features of the ``universe`` entities, d column names, (n,) attribute row
    or -1). One-hot / multi-hot categoricals, z-scored numerics; zeros without a row."""
    n = len(universe)
    if attrs is None:
        return np.zeros((n, 1), np.float32), ["constant"], np.full(n, -1, np.int64)
    raw, keep = attrs.rows.raw, attrs.rows.keep
    order = np.flatnonzero(keep)[np.argsort(attrs.key[keep], kind="stable")]
    pos = _positions(attrs.key[order], universe.to_numpy(zero_copy_only=False))
    row = np.where(pos >= 0, order[np.maximum(pos, 0)], -1)
    has = row >= 0
    blocks, names = [], []
    for col in [*attrs.src.categorical, *attrs.src.multi]:
        text = raw.column(col)[row[has]]
        sep = attrs.src.multi.get(col)
        parts = split_multi(text, sep) if sep else [[v] if v else [] for v in text]
        levels = sorted({p for ps in parts for p in ps})
        index = {lv: j for j, lv in enumerate(levels)}
        block = np.zeros((n, len(levels)), np.float32)
        hit_rows = np.flatnonzero(has)
        for r, ps in zip(hit_rows, parts, strict=True):
            block[r, [index[p] for p in ps]] = 1.0
        attrs.rows.missing[col] = sum(not ps for ps in parts)
        blocks.append(block)
        names += [f"{col}={lv}" for lv in levels]
    for col, values in attrs.numeric.items():
        x = values[row[has]]
        present = np.isfinite(x)
        mean = float(x[present].mean()) if present.any() else 0.0
        std = float(x[present].std()) if present.any() else 0.0
        z = np.zeros(n, np.float32)
        z[np.flatnonzero(has)[present]] = (x[present] - mean) / std if std > 0 else 0.0
        attrs.rows.missing[col] = int((~present).sum())
        blocks.append(z[:, None])
        names.append(col)
    if not blocks:
        return np.zeros((n, 1), np.float32), ["constant"], row
    return np.hstack(blocks).astype(np.float32), names, row


def _categories(
    attrs: _Attrs | None, row: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int32], list[str]]:
    """(I,) category of each item (first value of the primary column) and the names."""
    if attrs is None or attrs.src.category is None:
        return np.zeros(len(row), np.int32), [UNKNOWN_CATEGORY]
    first = np.full(len(row), "", object)
    col = attrs.src.category
    text = attrs.rows.raw.column(col)[row[row >= 0]]
    sep = attrs.src.multi.get(col)
    first[row >= 0] = [ps[0] if ps else "" for ps in split_multi(text, sep)] if sep else text
    names = sorted({str(v) for v in first if v})
    if (first == "").any() and UNKNOWN_CATEGORY not in names:
        names.append(UNKNOWN_CATEGORY)
    index = {n: j for j, n in enumerate(names)}
    return np.array([index[v or UNKNOWN_CATEGORY] for v in first], np.int32), names


def _universe(active: pa.Array, attrs: _Attrs | None, k_core: bool) -> pa.Array:
    """Sorted raw IDs of one entity: those in kept interactions (``active``, sorted) plus
    catalogue rows of its attribute table (which the k-core drops)."""
    if attrs is None:
        return active
    if k_core:
        outside = _index_in(arrow_text(attrs.key), active) < 0
        attrs.rows.drop(outside, "k_core", invalid=False)
    every = pc.unique(pa.concat_arrays([active.cast(pa.large_string()), attrs.kept_keys()]))
    return every.take(pc.array_sort_indices(every))


def _drop_unknown(log: LogRows, users: _Attrs | None, items: _Attrs | None) -> None:
    for entity, attrs in (("user", users), ("item", items)):
        if attrs is None or not attrs.src.require:
            continue
        raw, codes = (log.user_raw, log.user) if entity == "user" else (log.item_raw, log.item)
        known = _index_in(raw, attrs.kept_keys()) >= 0  # per distinct raw ID
        log.drop(~known[codes], f"unknown_{entity}", raw=log.raw_ids(entity))  # type: ignore[arg-type]


def build_import(
    cfg: ImportConfig, checksums: dict[Role, str], *, block_bytes: int = BLOCK_BYTES
) -> ImportedData:
    """Read, validate, filter and convert the inputs of ``cfg`` (no writing); text is read
    ``block_bytes`` at a time.

    Raises `DataImportError` in strict mode when any row or value is bad, `RawReadError`
    when a file cannot be read or lacks a configured column.
    """
    items = users = None
    if cfg.items is not None:
        items = _Attrs.read("items", cfg.items, checksums["items"], cfg, block_bytes)
    if cfg.users is not None:
        users = _Attrs.read("users", cfg.users, checksums["users"], cfg, block_bytes)
    log = read_log(cfg.interactions, cfg.max_examples, block_bytes=block_bytes)
    _drop_unknown(log, users, items)
    attr_rows = [a.rows for a in (items, users) if a is not None]

    def reports() -> list[FileReport]:
        return [log.report(checksums["interactions"]), *(r.report() for r in attr_rows)]

    if cfg.mode == "strict" and (log.tally.invalid or any(r.invalid for r in attr_rows)):
        raise DataImportError([f for f in reports() if f.invalid])
    rounds = log.apply_rules(cfg.k_core)
    if not log.keep.any():
        raise DataImportError(reports(), "no interaction is left")

    u_active = np.unique(log.user[log.keep])
    i_active = np.unique(log.item[log.keep])
    u_raw = _universe(log.user_raw.take(pa.array(u_active)), users, cfg.k_core is not None)
    i_raw = _universe(log.item_raw.take(pa.array(i_active)), items, cfg.k_core is not None)
    user_id, u_rule = assign_ids(u_raw)
    item_id, i_rule = assign_ids(i_raw)
    profile, user_names, u_row = _features(users, u_raw)
    content, item_names, i_row = _features(items, i_raw)
    category, category_names = _categories(items, i_row)
    # Raw-ID code -> stored ID, then per row: integer lookups, no text per row. The log's
    # per-row arrays go as soon as the kept rows are out (peak memory).
    u_stored = user_id[_index_in(log.user_raw, u_raw)]
    i_stored = item_id[_index_in(log.item_raw, i_raw)]
    u_code, i_code, inter_ts = log.take_kept()
    inter_user, inter_item = u_stored[u_code], i_stored[i_code]
    del u_code, i_code
    order = np.lexsort((inter_item, inter_ts, inter_user))
    inter_user, inter_item, inter_ts = inter_user[order], inter_item[order], inter_ts[order]
    report = ImportReport(
        mode=cfg.mode,
        files=reports(),
        timestamps=log.kind,
        timestamp_unit=log.unit,
        k_core_rounds=rounds,
        id_mapping={"user": u_rule, "item": i_rule},
        n_users=len(u_raw),
        n_items=len(i_raw),
        n_interactions=len(order),
        n_categories=len(category_names),
        users_without_attributes=int((u_row < 0).sum()),
        items_without_attributes=int((i_row < 0).sum()),
        users_without_interactions=len(u_raw) - len(u_active),
        items_without_interactions=len(i_raw) - len(i_active),
        user_features=user_names,
        item_features=item_names,
    )
    return ImportedData(
        user_id=user_id,
        user_raw=u_raw.cast(pa.string()),
        profile=profile,
        item_id=item_id,
        item_raw=i_raw.cast(pa.string()),
        category=category,
        content=content,
        category_names=category_names,
        inter_user=inter_user,
        inter_item=inter_item,
        inter_ts=inter_ts,
        report=report,
    )

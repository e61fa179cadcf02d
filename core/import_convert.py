"""Conversion of raw import files into snapshot arrays: parse and validate the log and the
attribute tables, filter by rule, assign stored IDs, encode features. Pure: reads the input
files, writes nothing (``core.importing`` writes the snapshot).

Choices: an exact duplicate (user, item, time) row is dropped, kept once and counted
('duplicate'); repeat interactions at other times are kept. Entities that appear only in
the log get zero features (and the 'unknown' item category) unless the attribute table is
``require``d; attribute rows of entities never interacted with stay as catalogue entries
(cold items / users), except under ``k_core``, which keeps only the core. Ratings and labels
only select rows; the snapshot stores no rating.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.import_config import AttributeSource, ImportConfig, InteractionSource, TableRead
from core.import_report import DataImportError, ImportReport, Role, RowTracker
from storage.rawlog import (
    RawTable,
    parse_floats,
    parse_id_ints,
    parse_labels,
    parse_times,
    read_raw_table,
    split_multi,
)

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
    def read(cls, role: Role, src: AttributeSource, sha: str, cfg: ImportConfig) -> _Attrs:
        raw = _read(src.path, src.read)
        cols = [src.key, *src.categorical, *src.multi, *src.numeric, src.category]
        raw.require(cols)
        rows = RowTracker(role, raw, sha, cfg.max_examples)
        key = raw.column(src.key)
        rows.drop(key == "", "missing_key")
        rows.drop(pd.Series(key).duplicated().to_numpy() & (key != ""), "duplicate_key")
        numeric = {}
        for col in src.numeric:
            numeric[col], bad = parse_floats(raw.column(col))
            rows.note(bad & rows.keep, f"bad_numeric:{col}", rows.invalid)
        return cls(src, rows, key, numeric)


def _read(path: str, read: TableRead) -> RawTable:
    return read_raw_table(
        Path(path),
        fmt=read.format,
        sep=read.sep,
        header=read.header,
        names=read.names,
        encoding=read.encoding,
    )


def k_core_mask(
    users: npt.NDArray[np.int64], items: npt.NDArray[np.int64], k: int
) -> tuple[npt.NDArray[np.bool_], int]:
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


def assign_ids(raw_ids: ObjArray) -> tuple[npt.NDArray[np.int64], Literal["identity", "dense"]]:
    """(n,) distinct raw IDs sorted as text -> ((n,) stored int64 IDs, rule used).

    "identity" when every raw ID is a canonical integer literal in int64 (outputs then speak
    the raw IDs); otherwise "dense": 1..n in the given (sorted raw-ID) order.
    """
    ok, values = parse_id_ints(raw_ids)
    if ok.all():
        return values, "identity"
    return np.arange(1, len(raw_ids) + 1, dtype=np.int64), "dense"


def _positions(sorted_keys: ObjArray, values: ObjArray) -> npt.NDArray[np.int64]:
    """Index of each of ``values`` in ``sorted_keys`` (sorted text), -1 where absent."""
    if len(sorted_keys) == 0:
        return np.full(len(values), -1, np.int64)
    pos = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == values, pos, -1).astype(np.int64)


@dataclass(frozen=True)
class ImportedData:
    """A converted import, ready to write. U users, I items, N interactions."""

    user_id: npt.NDArray[np.int64]  # (U,)
    user_raw: ObjArray  # (U,) raw IDs as text
    profile: npt.NDArray[np.float32]  # (U, P), P >= 1
    item_id: npt.NDArray[np.int64]  # (I,)
    item_raw: ObjArray  # (I,)
    category: npt.NDArray[np.int32]  # (I,) into category_names
    content: npt.NDArray[np.float32]  # (I, C), C >= 1
    category_names: list[str]
    inter_user: npt.NDArray[np.int64]  # (N,) stored user IDs
    inter_item: npt.NDArray[np.int64]  # (N,) stored item IDs
    inter_ts: npt.NDArray[np.int64]  # (N,) unix seconds (or line numbers, see report)
    report: ImportReport


def _features(
    attrs: _Attrs | None, universe: ObjArray
) -> tuple[npt.NDArray[np.float32], list[str], npt.NDArray[np.int64]]:
    """((n, d) features of the ``universe`` entities, d column names, (n,) attribute row
    or -1). One-hot / multi-hot categoricals, z-scored numerics; zeros without a row."""
    if attrs is None:
        return np.zeros((len(universe), 1), np.float32), ["constant"], np.full(len(universe), -1)
    raw, keep = attrs.rows.raw, attrs.rows.keep
    order = np.flatnonzero(keep)[np.argsort(attrs.key[keep], kind="stable")]
    pos = _positions(attrs.key[order], universe)
    row = np.where(pos >= 0, order[np.maximum(pos, 0)], -1)
    has = row >= 0
    blocks, names = [], []
    for col in [*attrs.src.categorical, *attrs.src.multi]:
        text = raw.column(col)[row[has]]
        sep = attrs.src.multi.get(col)
        parts = split_multi(text, sep) if sep else [[v] if v else [] for v in text]
        levels = sorted({p for ps in parts for p in ps})
        index = {lv: j for j, lv in enumerate(levels)}
        block = np.zeros((len(universe), len(levels)), np.float32)
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
        z = np.zeros(len(universe), np.float32)
        z[np.flatnonzero(has)[present]] = (x[present] - mean) / std if std > 0 else 0.0
        attrs.rows.missing[col] = int((~present).sum())
        blocks.append(z[:, None])
        names.append(col)
    if not blocks:
        return np.zeros((len(universe), 1), np.float32), ["constant"], row
    return np.hstack(blocks).astype(np.float32), names, row


def _categories(
    attrs: _Attrs | None, row: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int32], list[str]]:
    """(I,) category of each item (first value of the primary column) and the names."""
    first = np.full(len(row), "", object)
    if attrs is not None and attrs.src.category is not None:
        col = attrs.src.category
        text = attrs.rows.raw.column(col)[row[row >= 0]]
        sep = attrs.src.multi.get(col)
        first[row >= 0] = [ps[0] if ps else "" for ps in split_multi(text, sep)] if sep else text
    names = sorted({str(v) for v in first if v})
    if (first == "").any() and UNKNOWN_CATEGORY not in names:
        names.append(UNKNOWN_CATEGORY)
    index = {n: j for j, n in enumerate(names)}
    return np.array([index[v or UNKNOWN_CATEGORY] for v in first], np.int32), names


@dataclass(frozen=True)
class _Log:
    """The interaction log's columns, parsed (N rows; values of dropped rows are junk)."""

    user: ObjArray  # (N,) raw user IDs
    item: ObjArray  # (N,) raw item IDs
    ts: npt.NDArray[np.int64]  # (N,)
    kind: Literal["unix", "iso", "row_order"]
    rating: npt.NDArray[np.float64] | None  # (N,)
    label: npt.NDArray[np.int8] | None  # (N,)


def _parse_log(src: InteractionSource, rows: RowTracker) -> _Log:
    """Parse the log's columns, dropping rows with missing or unparsable values."""
    raw = rows.raw
    raw.require([src.user_col, src.item_col, src.time_col, src.rating_col, src.label_col])
    user, item = raw.column(src.user_col), raw.column(src.item_col)
    rows.drop(user == "", "missing_user")
    rows.drop(item == "", "missing_item")
    kind: Literal["unix", "iso", "row_order"] = "row_order"
    ts = raw.line.copy()
    if src.time_col is not None:
        text = raw.column(src.time_col)
        ts, bad, kind = parse_times(text, src.time_format)
        rows.drop(text == "", "missing_timestamp")
        rows.drop(bad, "bad_timestamp")
    rating = label = None
    if src.rating_col is not None:
        text = raw.column(src.rating_col)
        rating, bad = parse_floats(text)
        rows.drop(text == "", "missing_rating")
        rows.drop(bad, "bad_rating")
    if src.label_col is not None:
        text = raw.column(src.label_col)
        label, bad = parse_labels(text)
        rows.drop(text == "", "missing_label")
        rows.drop(bad, "bad_label")
    return _Log(user, item, ts, kind, rating, label)


def _filter(cfg: ImportConfig, log_: _Log, rows: RowTracker) -> int | None:
    """Drop rows by rule (rating threshold, label, exact duplicates, k-core); returns the
    k-core passes (None when off)."""
    src = cfg.interactions
    if src.min_rating is not None and log_.rating is not None:
        below = np.nan_to_num(log_.rating, nan=-np.inf) < src.min_rating
        rows.drop(below, "below_min_rating", invalid=False)
    if log_.label is not None:
        rows.drop(log_.label == 0, "negative_label", invalid=False)
    kept = np.flatnonzero(rows.keep)
    frame = pd.DataFrame({"u": log_.user[kept], "i": log_.item[kept], "t": log_.ts[kept]})
    rows.drop(
        _mask(len(rows.keep), kept[frame.duplicated().to_numpy()]), "duplicate", invalid=False
    )
    if cfg.k_core is None:
        return None
    kept = np.flatnonzero(rows.keep)
    u_code = np.unique(log_.user[kept], return_inverse=True)[1]
    i_code = np.unique(log_.item[kept], return_inverse=True)[1]
    core, rounds = k_core_mask(u_code, i_code, cfg.k_core)
    rows.drop(_mask(len(rows.keep), kept[~core]), "k_core", invalid=False)
    return rounds


def _mask(n: int, index: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    out = np.zeros(n, bool)
    out[index] = True
    return out


def _universe(active: ObjArray, attrs: _Attrs | None, k_core: bool) -> ObjArray:
    """Sorted raw IDs of one entity: those in kept interactions (``active``, sorted) plus
    catalogue rows of its attribute table (which the k-core drops)."""
    if attrs is None:
        return active
    if k_core:
        attrs.rows.drop(_positions(active, attrs.key) < 0, "k_core", invalid=False)
    return np.unique(np.concatenate([active, attrs.key[attrs.rows.keep]]).astype(object))


def build_import(cfg: ImportConfig, checksums: dict[Role, str]) -> ImportedData:
    """Read, validate, filter and convert the inputs of ``cfg`` (no writing).

    Raises `DataImportError` in strict mode when any row or value is bad, `RawReadError`
    when a file cannot be read or lacks a configured column.
    """
    src = cfg.interactions
    raw = _read(src.path, src.read)
    rows = RowTracker("interactions", raw, checksums["interactions"], cfg.max_examples)
    log_ = _parse_log(src, rows)
    items = _Attrs.read("items", cfg.items, checksums["items"], cfg) if cfg.items else None
    users = _Attrs.read("users", cfg.users, checksums["users"], cfg) if cfg.users else None
    for name, a, ids in (("user", users, log_.user), ("item", items, log_.item)):
        if a is not None and a.src.require:
            known = np.unique(a.key[a.rows.keep])
            rows.drop(_positions(known, ids) < 0, f"unknown_{name}")
    all_rows = [rows, *(a.rows for a in (items, users) if a is not None)]
    if cfg.mode == "strict" and any(r.invalid for r in all_rows):
        raise DataImportError([r.report() for r in all_rows if r.invalid])
    rounds = _filter(cfg, log_, rows)
    if not rows.keep.any():
        raise DataImportError([r.report() for r in all_rows], "no interaction is left")

    u_active, i_active = np.unique(log_.user[rows.keep]), np.unique(log_.item[rows.keep])
    u_raw = _universe(u_active, users, cfg.k_core is not None)
    i_raw = _universe(i_active, items, cfg.k_core is not None)
    user_id, u_rule = assign_ids(u_raw)
    item_id, i_rule = assign_ids(i_raw)
    profile, user_names, u_row = _features(users, u_raw)
    content, item_names, i_row = _features(items, i_raw)
    category, category_names = _categories(items, i_row)
    inter_user = user_id[_positions(u_raw, log_.user[rows.keep])]
    inter_item = item_id[_positions(i_raw, log_.item[rows.keep])]
    inter_ts = log_.ts[rows.keep]
    order = np.lexsort((inter_item, inter_ts, inter_user))
    report = ImportReport(
        mode=cfg.mode,
        files=[r.report() for r in all_rows],
        timestamps=log_.kind,
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
        user_raw=u_raw,
        profile=profile,
        item_id=item_id,
        item_raw=i_raw,
        category=category,
        content=content,
        category_names=category_names,
        inter_user=inter_user[order],
        inter_item=inter_item[order],
        inter_ts=inter_ts[order],
        report=report,
    )

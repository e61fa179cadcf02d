"""Parquet tables with explicit schemas: the `TableSpec` type, checked writes and reads,
streaming reads and writes, and numpy <-> Arrow vector conversion.

A table file is written whole or not at all (temp file, fsync, rename) and its schema is
checked against the spec from the file footer before any data is read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import SchemaError
from storage.fs import atomic_path

__all__ = [
    "ColumnSpec",
    "TableSpec",
    "TableWriter",
    "VectorKind",
    "arrow_to_vectors",
    "iter_batches",
    "iter_row_range",
    "read_num_rows",
    "read_table",
    "vector",
    "vectors_to_arrow",
    "write_table",
]

log = logging.getLogger(__name__)

# zstd: better ratio than snappy at similar decode speed for float/ID columns.
_COMPRESSION = "zstd"


@dataclass(frozen=True)
class VectorKind:
    """A float32 vector column stored as `fixed_size_list<float32>[dim]`.

    `dim=None` accepts any size; the size is then checked only when the caller passes
    `dims={column: d}`.
    """

    dim: int | None = None

    def __post_init__(self) -> None:
        if self.dim is not None and self.dim < 1:
            raise ValueError(f"vector dim must be >= 1, got {self.dim}")

    def __str__(self) -> str:
        return f"fixed_size_list<float32>[{'any' if self.dim is None else self.dim}]"


def vector(dim: int | None = None) -> VectorKind:
    """Column kind for float32 vectors of size `dim` (`None`: any size)."""
    return VectorKind(dim)


@dataclass(frozen=True)
class ColumnSpec:
    """One column: a name and either a concrete Arrow type or a `VectorKind`."""

    name: str
    kind: pa.DataType | VectorKind


@dataclass(frozen=True)
class TableSpec:
    """A table's required columns, in the order they are written."""

    name: str
    columns: tuple[ColumnSpec, ...]

    @property
    def file_name(self) -> str:
        """Conventional file name of this table inside a snapshot or version folder."""
        return f"{self.name}.parquet"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table '{self.name}' has no column {name!r} (has {self.column_names})")


def _expected_dim(spec: TableSpec, col: ColumnSpec, dims: Mapping[str, int] | None) -> int | None:
    assert isinstance(col.kind, VectorKind)
    given = None if dims is None else dims.get(col.name)
    if given is not None and col.kind.dim is not None and given != col.kind.dim:
        raise ValueError(
            f"table '{spec.name}' column '{col.name}' is fixed at dim {col.kind.dim}; "
            f"dims asked for {given}"
        )
    return col.kind.dim if given is None else given


def _type_problem(
    spec: TableSpec, col: ColumnSpec, found: pa.DataType, dims: Mapping[str, int] | None
) -> str | None:
    """Why `found` does not fit `col`, or None when it fits."""
    if isinstance(col.kind, VectorKind):
        dim = _expected_dim(spec, col, dims)
        expected = str(VectorKind(dim))
        # Compare structurally: the list's child field name ("item"/"element") varies
        # between writers and is irrelevant.
        if not pa.types.is_fixed_size_list(found) or found.value_type != pa.float32():
            return f"has type {found}, expected {expected}"
        if dim is not None and found.list_size != dim:
            return f"has vector dim {found.list_size}, expected {dim}"
        return None
    if found != col.kind:
        return f"has type {found}, expected {col.kind}"
    return None


def _check_schema(
    schema: pa.Schema, spec: TableSpec, where: str, dims: Mapping[str, int] | None
) -> None:
    vector_columns = {c.name for c in spec.columns if isinstance(c.kind, VectorKind)}
    unknown = sorted(set(dims or {}) - vector_columns)
    if unknown:
        # A misspelt key would otherwise silently skip the dimension check.
        raise ValueError(
            f"dims names {unknown}, not vector columns of table '{spec.name}' "
            f"(vector columns: {sorted(vector_columns)})"
        )
    names = set(schema.names)
    for col in spec.columns:
        if col.name not in names:
            raise SchemaError(
                f"{where}: table '{spec.name}' lacks column '{col.name}' "
                f"(expected {col.kind}; found columns {schema.names})"
            )
        problem = _type_problem(spec, col, schema.field(col.name).type, dims)
        if problem:
            raise SchemaError(f"{where}: table '{spec.name}' column '{col.name}' {problem}")


def _conform(
    table: pa.Table | pa.RecordBatch, spec: TableSpec, path: Path, dims: Mapping[str, int] | None
) -> pa.Table:
    """Check an in-memory table against `spec`; return its spec columns in spec order."""
    where = f"writing {path}"
    _check_schema(table.schema, spec, where, dims)
    selected = table.select(spec.column_names)
    for name in spec.column_names:
        nulls = selected.column(name).null_count
        if nulls:
            raise SchemaError(f"{where}: table '{spec.name}' column '{name}' has {nulls} nulls")
    if isinstance(selected, pa.RecordBatch):
        selected = pa.Table.from_batches([selected])
    # Vector columns under one canonical type (child field "item", as vectors_to_arrow
    # makes it): a table read back from Parquet names it "element", and the file's stored
    # Arrow schema, hence its bytes, would depend on where the rows came from.
    for i, field in enumerate(selected.schema):
        if isinstance(spec.column(field.name).kind, VectorKind):
            canonical = pa.list_(pa.float32(), field.type.list_size)
            if field.type != canonical or field.type.value_field.name != "item":
                selected = selected.set_column(i, field.name, selected.column(i).cast(canonical))
    return selected


def write_table(
    path: Path,
    table: pa.Table,
    spec: TableSpec,
    dims: Mapping[str, int] | None = None,
) -> None:
    """Check `table` against `spec` and write its spec columns (in spec order) to `path`.

    Raises `SchemaError` (before touching disk) on a missing column, wrong type, wrong
    vector dim or nulls. The file is replaced atomically: an existing file at `path` stays
    intact if anything fails.
    """
    path = Path(path)
    conformed = _conform(table, spec, path, dims)
    with atomic_path(path) as tmp:
        pq.write_table(conformed, tmp, compression=_COMPRESSION)
    log.debug("wrote table '%s' (%d rows) to %s", spec.name, conformed.num_rows, path)


class TableWriter:
    """Write a large table in pieces with bounded memory; commit atomically on `close()`.

    Use as a context manager: every `write()` is schema-checked; leaving the block
    normally makes the file appear at `path`, leaving it by an exception discards it.
    """

    def __init__(
        self,
        path: Path,
        spec: TableSpec,
        dims: Mapping[str, int] | None = None,
        row_group_rows: int | None = None,
    ) -> None:
        """``row_group_rows``: write row groups of exactly that many rows (the last one
        shorter), whatever the sizes of the parts, so the same rows written in different
        pieces make the same file, byte for byte; None: one row group per part."""
        if row_group_rows is not None and row_group_rows < 1:
            raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
        self.path = Path(path)
        self.spec = spec
        self.dims = dims
        self.rows = 0
        self.row_group_rows = row_group_rows
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._atomic = atomic_path(self.path)
        self._tmp: Path | None = None
        self._writer: pq.ParquetWriter | None = None

    def __enter__(self) -> Self:
        self._tmp = self._atomic.__enter__()
        return self

    def write(self, part: pa.Table | pa.RecordBatch) -> None:
        """Append rows; `part` must fit the spec like in `write_table`."""
        if self._tmp is None:
            raise RuntimeError("TableWriter.write() outside its `with` block")
        conformed = _conform(part, self.spec, self.path, self.dims)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp, conformed.schema, compression=_COMPRESSION)
        elif conformed.schema != self._writer.schema:
            # A vector dim changing between parts would otherwise fail deep in pyarrow.
            raise SchemaError(
                f"writing {self.path}: table '{self.spec.name}' part schema "
                f"{conformed.schema} differs from the first part's {self._writer.schema}"
            )
        self.rows += conformed.num_rows
        if self.row_group_rows is None:
            self._writer.write_table(conformed)
            return
        self._pending.append(conformed)
        self._pending_rows += conformed.num_rows
        if self._pending_rows >= self.row_group_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        """Write the buffered rows as full row groups (and, when ``final``, the rest)."""
        assert self._writer is not None and self.row_group_rows is not None
        # One contiguous chunk per column: Parquet's pages follow Arrow's chunks, so the
        # bytes would otherwise depend on how the rows arrived.
        table = pa.concat_tables(self._pending).combine_chunks()
        full = (
            table.num_rows if final else table.num_rows // self.row_group_rows * self.row_group_rows
        )
        if full:
            self._writer.write_table(table.slice(0, full), row_group_size=self.row_group_rows)
        rest = table.slice(full)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            if exc_type is None and self._pending_rows:
                self._flush(final=True)
            self._writer.close()
        elif exc_type is None:
            # With `vector(None)` columns there is no schema to write for zero parts.
            err = SchemaError(f"writing {self.path}: table '{self.spec.name}' got no rows")
            self._atomic.__exit__(SchemaError, err, None)
            raise err
        self._atomic.__exit__(exc_type, exc, tb)
        if exc_type is None:
            log.debug("wrote table '%s' (%d rows) to %s", self.spec.name, self.rows, self.path)


def _open_checked(
    path: Path, spec: TableSpec, columns: Sequence[str] | None, dims: Mapping[str, int] | None
) -> tuple[pq.ParquetFile, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table '{spec.name}' file not found")
    pf = pq.ParquetFile(path)
    try:
        schema = pf.schema_arrow
        _check_schema(schema, spec, str(path), dims)
        wanted = spec.column_names if columns is None else list(columns)
        for name in wanted:
            if name not in schema.names:
                raise SchemaError(
                    f"{path}: table '{spec.name}' lacks requested column '{name}' "
                    f"(found columns {schema.names})"
                )
    except BaseException:
        pf.close()
        raise
    return pf, wanted


def read_table(
    path: Path,
    spec: TableSpec,
    columns: Sequence[str] | None = None,
    dims: Mapping[str, int] | None = None,
) -> pa.Table:
    """Read a table written for `spec`, checking its schema from the footer first.

    `columns=None` returns the spec's columns in spec order; otherwise exactly `columns`
    (which may name extra columns the file has beyond the spec). Raises
    `FileNotFoundError` or `SchemaError` naming the file, the table and the column.
    """
    pf, wanted = _open_checked(path, spec, columns, dims)
    with pf:
        return pf.read(columns=wanted).select(wanted)


def iter_batches(
    path: Path,
    spec: TableSpec,
    columns: Sequence[str] | None = None,
    batch_rows: int = 65_536,
    dims: Mapping[str, int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a checked table as record batches of at most `batch_rows` rows.

    Memory is bounded by one row group plus one batch, so multi-million-row tables can be
    processed piecewise. The schema is checked before the first batch is yielded.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    pf, wanted = _open_checked(path, spec, columns, dims)

    def gen() -> Iterator[pa.RecordBatch]:
        with pf:
            for batch in pf.iter_batches(batch_size=batch_rows, columns=wanted):
                yield batch.select(wanted)

    # Checking happened eagerly above; only the reading is lazy.
    return gen()


def iter_row_range(
    path: Path,
    spec: TableSpec,
    lo: int,
    hi: int,
    columns: Sequence[str] | None = None,
    batch_rows: int = 65_536,
) -> Iterator[pa.RecordBatch]:
    """Rows ``[lo, hi)`` of a checked table as record batches of at most ``batch_rows``,
    decoding only the row groups that hold them (a shard of a 100M-row table reads its
    own slice, not the file)."""
    if batch_rows < 1 or lo < 0 or hi < lo:
        raise ValueError(f"need 0 <= lo <= hi and batch_rows >= 1, got {lo}, {hi}, {batch_rows}")
    pf, wanted = _open_checked(path, spec, columns, None)
    meta = pf.metadata
    if hi > meta.num_rows:
        pf.close()
        raise ValueError(f"{path}: rows [{lo}, {hi}) past its {meta.num_rows} rows")
    groups, first, start = [], None, 0
    for g in range(meta.num_row_groups):
        end = start + meta.row_group(g).num_rows
        if end > lo and start < hi:
            groups.append(g)
            first = start if first is None else first
        start = end

    def gen() -> Iterator[pa.RecordBatch]:
        at = 0 if first is None else first
        with pf:
            if not groups:
                return
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=wanted):
                a, b = max(lo - at, 0), min(hi - at, batch.num_rows)
                at += batch.num_rows
                if b > a:
                    yield batch.slice(a, b - a).select(wanted)

    return gen()


def read_num_rows(path: Path, spec: TableSpec, dims: Mapping[str, int] | None = None) -> int:
    """Row count of a checked table, from the footer alone (no data read)."""
    pf, _ = _open_checked(path, spec, None, dims)
    with pf:
        return pf.metadata.num_rows


def vectors_to_arrow(arr: npt.ArrayLike) -> pa.FixedSizeListArray:
    """(n, d) array -> `fixed_size_list<float32>[d]` array of length n.

    Zero-copy when `arr` is already C-contiguous float32; otherwise one conversion copy.
    """
    a = np.ascontiguousarray(arr, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"expected an (n, d) array with d >= 1, got shape {a.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def _chunk_to_vectors(chunk: pa.Array) -> npt.NDArray[np.float32]:
    typ = chunk.type
    if not pa.types.is_fixed_size_list(typ) or typ.value_type != pa.float32():
        raise TypeError(f"expected fixed_size_list<float32>, got {typ}")
    if chunk.null_count:
        raise ValueError(f"vector column has {chunk.null_count} null rows")
    # flatten() honours the chunk's slice offset, unlike .values.
    flat = chunk.flatten()
    if flat.null_count:
        raise ValueError(f"vector column has {flat.null_count} null elements")
    return flat.to_numpy(zero_copy_only=True).reshape(-1, typ.list_size)


def arrow_to_vectors(
    col: pa.Array | pa.ChunkedArray, copy: bool = False
) -> npt.NDArray[np.float32]:
    """`fixed_size_list<float32>[d]` column of length n -> (n, d) float32 array.

    A single-chunk column is viewed without copying, so the result is **read-only**; pass
    `copy=True` for a writable array (e.g. before `torch.from_numpy`, which warns on
    read-only input). Multi-chunk columns are concatenated (one copy).
    """
    if isinstance(col, pa.ChunkedArray):
        typ = col.type
        if col.num_chunks == 0:
            if not pa.types.is_fixed_size_list(typ):
                raise TypeError(f"expected fixed_size_list<float32>, got {typ}")
            return np.empty((0, typ.list_size), dtype=np.float32)
        if col.num_chunks > 1:
            return np.concatenate([_chunk_to_vectors(c) for c in col.chunks])
        col = col.chunk(0)
    out = _chunk_to_vectors(col)
    return out.copy() if copy else out

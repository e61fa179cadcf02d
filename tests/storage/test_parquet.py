"""Parquet tables: lossless round trips, schema checks on write and read, streaming."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage import (
    ALL_TABLES,
    CATEGORIES,
    ITEM_EMBEDDINGS,
    ITEMS,
    USERS,
    ColumnSpec,
    SchemaError,
    TableSpec,
    TableWriter,
    VectorKind,
    arrow_to_vectors,
    iter_batches,
    iter_row_range,
    read_num_rows,
    read_table,
    vector,
    vectors_to_arrow,
    write_table,
)


def _column(kind: pa.DataType | VectorKind, n: int, rng: np.random.Generator) -> pa.Array:
    if isinstance(kind, VectorKind):
        return vectors_to_arrow(rng.standard_normal((n, kind.dim or 5), dtype=np.float32))
    if pa.types.is_string(kind):
        return pa.array([f"name-{i}" for i in range(n)], kind)
    if pa.types.is_floating(kind):
        return pa.array(rng.standard_normal(n).astype(kind.to_pandas_dtype()), kind)
    if pa.types.is_list(kind):
        lengths = rng.integers(0, 6, n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = _column(kind.value_type, int(offsets[-1]), rng)
        return pa.ListArray.from_arrays(pa.array(offsets), values).cast(kind)
    info = np.iinfo(kind.to_pandas_dtype())
    return pa.array(rng.integers(info.min, info.max, n, endpoint=True), kind)


def _random_table(spec: TableSpec, n: int = 50, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({c.name: _column(c.kind, n, rng) for c in spec.columns})


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("spec", ALL_TABLES, ids=lambda s: f"{s.name}-{len(s.columns)}")
def test_every_table_spec_round_trips_losslessly(tmp_path: Path, spec: TableSpec) -> None:
    table = _random_table(spec)
    path = tmp_path / spec.file_name
    write_table(path, table, spec)
    back = read_table(path, spec)
    assert back.column_names == spec.column_names
    for col in spec.columns:
        if isinstance(col.kind, VectorKind):
            assert np.array_equal(
                arrow_to_vectors(back.column(col.name)), arrow_to_vectors(table.column(col.name))
            )
        else:
            assert back.column(col.name).type == col.kind
            assert back.column(col.name).to_pylist() == table.column(col.name).to_pylist()


def test_vectors_round_trip_bit_exact(tmp_path: Path) -> None:
    special = np.array(
        [[0.0, -0.0, np.inf, -np.inf], [np.nan, 1e-45, np.finfo(np.float32).max, 1 / 3]],
        dtype=np.float32,
    )
    table = pa.table(
        {"item_id": pa.array([5, 2**40], pa.int64()), "embedding": vectors_to_arrow(special)}
    )
    write_table(tmp_path / "e.parquet", table, ITEM_EMBEDDINGS, dims={"embedding": 4})
    back = arrow_to_vectors(read_table(tmp_path / "e.parquet", ITEM_EMBEDDINGS).column("embedding"))
    assert back.dtype == np.float32 and back.shape == (2, 4)
    assert np.array_equal(back.view(np.uint32), special.view(np.uint32))


def test_write_selects_spec_columns_in_spec_order(tmp_path: Path) -> None:
    t = _random_table(ITEMS)
    shuffled = t.select(["content", "item_id", "category"]).append_column(
        "junk", pa.array(range(50))
    )
    write_table(tmp_path / "items.parquet", shuffled, ITEMS)
    assert pq.read_schema(tmp_path / "items.parquet").names == ["item_id", "category", "content"]


def test_read_returns_requested_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    t = _random_table(USERS).append_column("note", pa.array(["x"] * 50))
    pq.write_table(t, path)  # another writer may add columns beyond the spec
    assert read_table(path, USERS).column_names == ["user_id", "profile"]
    only = read_table(path, USERS, columns=["note", "user_id"])
    assert only.column_names == ["note", "user_id"]
    with pytest.raises(SchemaError, match="lacks requested column 'nope'"):
        read_table(path, USERS, columns=["nope"])


def test_read_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.parquet"
    with pytest.raises(FileNotFoundError, match=r"absent\.parquet"):
        read_table(path, USERS)


def test_read_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pq.write_table(_random_table(ITEMS).drop_columns(["category"]), path)
    with pytest.raises(SchemaError) as err:
        read_table(path, ITEMS, columns=["item_id"])
    msg = str(err.value)
    assert str(path) in msg and "table 'items' lacks column 'category'" in msg and "int32" in msg


def test_read_wrong_type_names_file_column_and_types(tmp_path: Path) -> None:
    path = tmp_path / "categories.parquet"
    pq.write_table(pa.table({"category": pa.array([1], pa.int64()), "name": ["a"]}), path)
    with pytest.raises(SchemaError) as err:
        read_table(path, CATEGORIES)
    msg = str(err.value)
    assert str(path) in msg and "column 'category'" in msg
    assert "has type int64, expected int32" in msg


def test_read_variable_length_list_is_not_a_vector(tmp_path: Path) -> None:
    path = tmp_path / "users.parquet"
    pq.write_table(
        pa.table({"user_id": [1], "profile": pa.array([[1.0, 2.0]], pa.list_(pa.float32()))}), path
    )
    with pytest.raises(
        SchemaError, match=r"column 'profile' has type list<.*expected fixed_size_list"
    ):
        read_table(path, USERS)


def test_read_wrong_vector_dim(tmp_path: Path) -> None:
    path = tmp_path / "item_embeddings.parquet"
    write_table(path, _random_table(ITEM_EMBEDDINGS), ITEM_EMBEDDINGS)  # dim 5
    assert read_table(path, ITEM_EMBEDDINGS, dims={"embedding": 5}).num_rows == 50
    with pytest.raises(ValueError, match=r"dims names \['embeding'\], not vector columns"):
        read_table(path, ITEM_EMBEDDINGS, dims={"embeding": 8})
    with pytest.raises(SchemaError) as err:
        read_table(path, ITEM_EMBEDDINGS, dims={"embedding": 8})
    msg = str(err.value)
    assert str(path) in msg and "column 'embedding' has vector dim 5, expected 8" in msg


def test_fixed_dim_spec_checks_dim_without_dims(tmp_path: Path) -> None:
    spec = TableSpec("fixed", (ColumnSpec("v", vector(3)),))
    with pytest.raises(SchemaError, match="vector dim 2, expected 3"):
        write_table(
            tmp_path / "f.parquet", pa.table({"v": vectors_to_arrow(np.ones((1, 2)))}), spec
        )
    with pytest.raises(ValueError, match="fixed at dim 3"):
        write_table(
            tmp_path / "f.parquet",
            pa.table({"v": vectors_to_arrow(np.ones((1, 3)))}),
            spec,
            dims={"v": 4},
        )


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda t: t.drop_columns(["item_id"]), "lacks column 'item_id'"),
        (
            lambda t: t.set_column(0, "item_id", pa.array(range(50), pa.int32())),
            "column 'item_id' has type int32",
        ),
        (
            lambda t: t.set_column(0, "item_id", pa.array([None] * 50, pa.int64())),
            "column 'item_id' has 50 nulls",
        ),
        (
            lambda t: t.set_column(1, "embedding", vectors_to_arrow(np.ones((50, 2)))),
            "vector dim 2, expected 5",
        ),
    ],
    ids=["missing", "wrong-type", "nulls", "wrong-dim"],
)
def test_write_rejects_bad_table_and_keeps_existing_file(tmp_path: Path, bad, message: str) -> None:
    path = tmp_path / "item_embeddings.parquet"
    good = _random_table(ITEM_EMBEDDINGS)
    write_table(path, good, ITEM_EMBEDDINGS)
    before = path.read_bytes()
    with pytest.raises(SchemaError, match=message) as err:
        write_table(path, bad(good), ITEM_EMBEDDINGS, dims={"embedding": 5})
    assert str(path) in str(err.value)
    assert path.read_bytes() == before
    assert _no_temp_files(tmp_path)


def test_iter_batches_streams_in_bounded_batches(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    table = _random_table(ITEMS, n=10)
    write_table(path, table, ITEMS)
    batches = list(iter_batches(path, ITEMS, columns=["content", "item_id"], batch_rows=3))
    assert [b.num_rows for b in batches] == [3, 3, 3, 1]
    assert batches[0].schema.names == ["content", "item_id"]
    joined = pa.Table.from_batches(batches)
    assert joined.column("item_id").to_pylist() == table.column("item_id").to_pylist()
    assert read_num_rows(path, ITEMS) == 10


def test_iter_row_range_reads_only_the_rows_asked_for(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    table = _random_table(ITEMS, n=25)
    with TableWriter(path, ITEMS) as w:  # row groups of 10, 10 and 5 rows
        for lo in (0, 10, 20):
            w.write(table.slice(lo, 10))
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    ids = table.column("item_id").to_pylist()
    for lo, hi in ((0, 25), (3, 17), (10, 20), (19, 21), (24, 25), (7, 7)):
        batches = list(iter_row_range(path, ITEMS, lo, hi, columns=["item_id"], batch_rows=4))
        got = [x for b in batches for x in b.column(0).to_pylist()]
        assert got == ids[lo:hi], (lo, hi)
        assert all(0 < b.num_rows <= 4 for b in batches)
    with pytest.raises(ValueError, match="past its 25 rows"):
        iter_row_range(path, ITEMS, 20, 26)
    with pytest.raises(ValueError, match="lo <= hi"):
        iter_row_range(path, ITEMS, 5, 4)


def test_fixed_row_groups_make_the_same_file_from_any_pieces(tmp_path: Path) -> None:
    table = _random_table(ITEM_EMBEDDINGS, n=50)
    files = []
    for i, cuts in enumerate(([0, 50], [0, 3, 4, 31, 50], [0, 17, 50], [0, 1, 2, 3, 49, 50])):
        path = tmp_path / f"e{i}.parquet"
        with TableWriter(path, ITEM_EMBEDDINGS, row_group_rows=16) as w:
            for lo, hi in itertools.pairwise(cuts):
                w.write(table.slice(lo, hi - lo))
        files.append(path.read_bytes())
        meta = pq.ParquetFile(path).metadata
        assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [16, 16, 16, 2]
    # Rows read back from Parquet (whose vector child field is named "element", not
    # "item") make the same file too.
    write_table(tmp_path / "src.parquet", table, ITEM_EMBEDDINGS)
    back = pq.read_table(tmp_path / "src.parquet")
    assert back.schema.field("embedding").type.value_field.name == "element"
    with TableWriter(tmp_path / "e4.parquet", ITEM_EMBEDDINGS, row_group_rows=16) as w:
        w.write(back.slice(0, 20))
        w.write(back.slice(20))
    files.append((tmp_path / "e4.parquet").read_bytes())
    assert files[0] == files[1] == files[2] == files[3] == files[4]
    assert read_table(tmp_path / "e1.parquet", ITEM_EMBEDDINGS).equals(table)
    with pytest.raises(ValueError, match="row_group_rows"):
        TableWriter(tmp_path / "x.parquet", ITEM_EMBEDDINGS, row_group_rows=0)


def test_iter_batches_checks_schema_before_iterating(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pq.write_table(_random_table(ITEMS).drop_columns(["content"]), path)
    with pytest.raises(SchemaError, match="lacks column 'content'"):
        iter_batches(path, ITEMS)  # no next(): the check is eager


def test_table_writer_appends_parts_atomically(tmp_path: Path) -> None:
    path = tmp_path / "item_embeddings.parquet"
    parts = [_random_table(ITEM_EMBEDDINGS, n=20, seed=s) for s in range(3)]
    with TableWriter(path, ITEM_EMBEDDINGS, dims={"embedding": 5}) as w:
        for p in parts:
            w.write(p)
            assert not path.exists()  # nothing visible until the block ends
    assert read_table(path, ITEM_EMBEDDINGS).num_rows == 60

    with (
        pytest.raises(SchemaError, match="differs from the first part"),
        TableWriter(path, ITEM_EMBEDDINGS) as w,
    ):
        w.write(parts[0])
        w.write(parts[0].set_column(1, "embedding", vectors_to_arrow(np.ones((20, 3)))))
    assert read_table(path, ITEM_EMBEDDINGS).num_rows == 60  # old file intact
    with (
        pytest.raises(SchemaError, match="got no rows"),
        TableWriter(tmp_path / "empty.parquet", ITEM_EMBEDDINGS),
    ):
        pass
    assert _no_temp_files(tmp_path) and not (tmp_path / "empty.parquet").exists()


def test_vectors_to_arrow_is_zero_copy_for_float32() -> None:
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    arr = vectors_to_arrow(a)
    assert arr.type == pa.list_(pa.float32(), 3) and len(arr) == 4
    assert arr.values.buffers()[1].address == a.ctypes.data
    assert arrow_to_vectors(vectors_to_arrow(a.astype(np.float64))).dtype == np.float32
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        vectors_to_arrow(np.ones(3))


def test_arrow_to_vectors_views_slices_and_concatenates_chunks() -> None:
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    arr = vectors_to_arrow(a)
    view = arrow_to_vectors(arr)
    assert np.shares_memory(view, a) and not view.flags.writeable
    assert arrow_to_vectors(arr, copy=True).flags.writeable
    assert np.array_equal(arrow_to_vectors(arr.slice(1, 2)), a[1:3])
    chunked = pa.chunked_array([arr.slice(0, 1), arr.slice(1, 3)])
    assert np.array_equal(arrow_to_vectors(chunked), a)
    assert arrow_to_vectors(pa.chunked_array([], pa.list_(pa.float32(), 3))).shape == (0, 3)
    with pytest.raises(ValueError, match="null rows"):
        arrow_to_vectors(pa.array([[1.0, 2.0], None], pa.list_(pa.float32(), 2)))
    with pytest.raises(TypeError, match="fixed_size_list<float32>"):
        arrow_to_vectors(pa.array([1.0]))

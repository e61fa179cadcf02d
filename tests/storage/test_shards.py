"""Shard parts (``storage.shards``): a part is read only when its bytes match what its
writer reported; hostile names are refused; parts of versions no longer staged are removed
by the next run's clean-up, never those of a live staging."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from storage import (
    ColumnSpec,
    CorruptVersionError,
    Layout,
    ShardFolder,
    TableSpec,
    VersionStore,
    begin_snapshot,
)

SPEC = TableSpec("t", (ColumnSpec("x", pa.int64()),))


def test_a_part_round_trips_and_a_changed_one_is_refused(tmp_path: Path) -> None:
    folder = ShardFolder(Layout(tmp_path), "v1", "embed-items")
    ref = folder.write("part-00000.parquet", pa.table({"x": [1, 2, 3]}), SPEC)
    assert ref.rows == 3 and len(ref.sha256) == 64
    assert folder.read(ref, SPEC).column("x").to_pylist() == [1, 2, 3]
    # Another attempt rewrote the part (a retried shard): the old reference no longer holds.
    folder.write("part-00000.parquet", pa.table({"x": [1, 2, 4]}), SPEC)
    with pytest.raises(CorruptVersionError, match="does not match"):
        folder.read(ref, SPEC)
    folder.remove()
    assert not folder.path.exists() and not folder.path.parent.exists()


def test_an_index_part_round_trips_and_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    import faiss
    import numpy as np

    folder = ShardFolder(Layout(tmp_path), "v1", "build-index")
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(4))
    index.add_with_ids(np.eye(4, dtype=np.float32), np.array([10, 11, 12, 13], dtype=np.int64))
    ref = folder.write_index("part-00000.faiss", index)
    assert ref.rows == 4
    back = folder.read_index(ref)
    assert back.ntotal == 4 and back.search(np.eye(4, dtype=np.float32)[:1], 1)[1][0, 0] == 10
    path = folder.path / ref.name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptVersionError, match=r"part-00000.faiss.*does not match"):
        folder.read_index(ref)
    path.unlink()
    with pytest.raises(CorruptVersionError, match="shard part is missing"):
        folder.read_index(ref)


@pytest.mark.parametrize("name", ["../escape.parquet", "/abs.parquet", ".hidden", "a/b"])
def test_hostile_part_names_are_refused(tmp_path: Path, name: str) -> None:
    folder = ShardFolder(Layout(tmp_path), "v1", "evaluate")
    with pytest.raises(ValueError, match="invalid part name"):
        folder.write(name, pa.table({"x": [1]}), SPEC)
    with pytest.raises(ValueError, match="invalid version id"):
        ShardFolder(Layout(tmp_path), "../v1", "evaluate").write("p", pa.table({"x": [1]}), SPEC)
    assert not list(tmp_path.rglob("*.parquet"))


def test_orphaned_parts_go_with_the_next_clean_up_live_ones_stay(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    store = VersionStore(layout)
    live = store.begin("v-live")
    ShardFolder(layout, "v-live", "evaluate").write("p.parquet", pa.table({"x": [1]}), SPEC)
    orphan = ShardFolder(layout, "v-gone", "embed-items")
    orphan.write("p.parquet", pa.table({"x": [1]}), SPEC)  # its staging never existed here
    # Generation parts live under the name of their snapshot's staging folder.
    drawing = begin_snapshot(layout, "synthetic-tiny-seed1-abc")
    generating = ShardFolder(layout, drawing.name, "generate")
    generating.write("p.parquet", pa.table({"x": [1]}), SPEC)

    removed = store.collect_dead(own="v-live", publish_locked=True)

    assert removed == [orphan.path.parent]
    assert ShardFolder(layout, "v-live", "evaluate").path.is_dir() and live.is_dir()
    assert generating.path.is_dir()
    store.discard("v-live")  # discarding a version takes its parts along
    assert not (layout.staging_dir / "shards" / "v-live").exists()

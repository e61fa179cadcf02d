"""Shard files: the pieces a step split over workers writes, until its merge reads them.

A sharded step (item embedding by item ranges, evaluation by user ranges, the index build
by item ranges) runs its shards on any worker that can reach the store; each writes its
result as a part (parquet, or a Faiss index) under
``<root>/staging/shards/<version id>/<step>/`` and hands back a ``PartRef`` (file name,
row count, SHA-256), a few bytes, never the data itself. The merge checks every part
against its reference before reading it: a worker that died mid-write, a disk that
flipped a byte or a stale part of an earlier attempt is refused by name, never merged.
Parts are written atomically (``storage.parquet.write_table``, ``save_index``), and the
folder goes with the merge or with the staged version.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from storage.artifacts import load_index, save_index
from storage.errors import CorruptVersionError
from storage.fs import sha256_file
from storage.layout import Layout, validate_id
from storage.parquet import TableSpec, read_table, write_table

if TYPE_CHECKING:
    import faiss

__all__ = ["PartRef", "ShardFolder"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartRef:
    """One written part: its file name in the step's shard folder, rows and SHA-256."""

    name: str
    rows: int
    sha256: str


@dataclass(frozen=True)
class ShardFolder:
    """The shard parts of one step of one staged version."""

    layout: Layout
    version_id: str
    step: str

    @property
    def path(self) -> Path:
        """``<root>/staging/shards/<version id>/<step>``."""
        return (
            self.layout.staging_shards_dir
            / validate_id("version id", self.version_id)
            / validate_id("step", self.step)
        )

    def write(self, name: str, table: pa.Table, spec: TableSpec) -> PartRef:
        """Write ``table`` (checked against ``spec``) as part ``name``; its reference."""
        path = self.path / validate_id("part name", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_table(path, table, spec)
        return PartRef(path.name, table.num_rows, sha256_file(path))

    def read(self, ref: PartRef, spec: TableSpec) -> pa.Table:
        """Part ``ref`` after checking its bytes against the reference; raises
        ``CorruptVersionError`` naming the part when they differ or it is missing."""
        path = self._checked(ref)
        table = read_table(path, spec)
        if table.num_rows != ref.rows:  # unreachable unless SHA-256 collides; cheap to check
            raise CorruptVersionError(
                self.version_id, str(path), f"shard part has {table.num_rows} rows, not {ref.rows}"
            )
        return table

    def write_index(self, name: str, index: faiss.Index) -> PartRef:
        """Write a Faiss index as part ``name`` (``faiss.write_index``); its reference
        (rows = the vectors it holds)."""
        path = self.path / validate_id("part name", name)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_index(path, index)
        return PartRef(path.name, int(index.ntotal), sha256_file(path))

    def read_index(self, ref: PartRef) -> faiss.Index:
        """Index part ``ref`` after checking its bytes (``CorruptVersionError`` as ``read``)."""
        path = self._checked(ref)
        index = load_index(path)
        if index.ntotal != ref.rows:  # unreachable unless SHA-256 collides; cheap to check
            raise CorruptVersionError(
                self.version_id,
                str(path),
                f"index part holds {index.ntotal} vectors, not {ref.rows}",
            )
        return index

    def _checked(self, ref: PartRef) -> Path:
        """The path of part ``ref`` once its bytes match the reference."""
        path = self.path / validate_id("part name", ref.name)
        if not path.is_file():
            raise CorruptVersionError(
                self.version_id, str(path), "shard part is missing; the step must run again"
            )
        digest = sha256_file(path)
        if digest != ref.sha256:
            raise CorruptVersionError(
                self.version_id,
                str(path),
                f"shard part does not match what its worker wrote (SHA-256 {digest} != "
                f"{ref.sha256}); the step must run again",
            )
        return path

    def remove(self) -> None:
        """Delete this step's parts (and the version's shard folder once empty)."""
        shutil.rmtree(self.path, ignore_errors=True)
        # Fails while another step's parts are there, or when it is gone already.
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()

    @staticmethod
    def remove_version(layout: Layout, version_id: str) -> None:
        """Delete every shard part of ``version_id`` (a discarded or published version)."""
        shutil.rmtree(
            layout.staging_shards_dir / validate_id("version id", version_id),
            ignore_errors=True,
        )

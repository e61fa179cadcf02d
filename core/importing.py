"""Import real interaction logs (plus optional user / item attribute tables) as an immutable
data snapshot in the synthetic generator's format, so training and evaluation read it with
``core.dataio.load_dataset`` unchanged; adds the stored-ID -> raw-ID maps
(user_ids.parquet, item_ids.parquet) and the import report (in snapshot.json).

Conversion rules live in ``core.import_convert``; this module names, writes and commits
the snapshot, and reads the ID maps back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from pydantic import BaseModel

from core.dataio import snapshot_tables
from core.import_config import AttributeSource, ImportConfig, InteractionSource
from core.import_convert import ImportedData, build_import
from core.import_report import DataImportError, FileReport, ImportReport, Role
from core.refs import SnapshotRef
from storage import (
    INTERACTIONS,
    ITEM_IDS,
    USER_IDS,
    Layout,
    SnapshotFiles,
    TableWriter,
    begin_snapshot,
    commit_snapshot,
    read_json,
    read_table,
    sha256_file,
    snapshot_exists,
    snapshot_path,
    write_json,
    write_table,
)
from storage.rawstream import BLOCK_BYTES, RawReadError
from storage.rawtext import RawFileMissingError

__all__ = [
    "IMPORTER_VERSION",
    "DataImportError",
    "FileReport",
    "IdMap",
    "ImportReport",
    "ImportResult",
    "import_log",
    "import_snapshot_id",
    "input_checksums",
    "load_id_map",
    "run_import",
]

log = logging.getLogger(__name__)
ObjArray = npt.NDArray[np.object_]

# Bump when the same inputs would convert differently. 2: plausible time range and units,
# control characters in IDs, per-line accounting, per-file separators.
IMPORTER_VERSION: Final = 2
_WRITE_ROWS: Final = 1 << 20  # interactions are written in parts of this many rows


class ImportResult(BaseModel):
    """The committed snapshot, its report, and whether an identical one was reused."""

    ref: SnapshotRef
    report: ImportReport
    reused: bool


def _sources(cfg: ImportConfig) -> dict[Role, InteractionSource | AttributeSource]:
    out: dict[Role, InteractionSource | AttributeSource] = {"interactions": cfg.interactions}
    if cfg.items is not None:
        out["items"] = cfg.items
    if cfg.users is not None:
        out["users"] = cfg.users
    return out


def input_checksums(cfg: ImportConfig) -> dict[Role, str]:
    """sha256 of every input file, by role; `RawReadError` names a missing one."""
    sums: dict[Role, str] = {}
    for role, src in _sources(cfg).items():
        if not Path(src.path).is_file():
            raise RawFileMissingError(f"{src.path}: {role} file not found")
        try:
            sums[role] = sha256_file(Path(src.path))
        except OSError as e:
            raise RawReadError(
                f"{src.path}: cannot read the {role} file ({e.strerror or e})"
            ) from None
    return sums


def import_snapshot_id(cfg: ImportConfig, checksums: dict[Role, str]) -> str:
    """``<name>-<digest>``: the same config and file contents name the same snapshot,
    wherever the files lie (paths are replaced by their checksums before hashing)."""
    doc = cfg.model_dump(mode="json")
    for role, sha in checksums.items():
        doc[role]["path"] = sha
    blob = json.dumps({"importer": IMPORTER_VERSION, "config": doc}, sort_keys=True)
    return f"{cfg.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _write(folder: Path, data: ImportedData, meta: dict[str, Any]) -> None:
    tables = {
        **snapshot_tables(data),
        USER_IDS: {"id": data.user_id, "raw_id": data.user_raw},
        ITEM_IDS: {"id": data.item_id, "raw_id": data.item_raw},
    }
    files = {}
    for spec, columns in tables.items():
        path = folder / spec.file_name
        if spec is INTERACTIONS:
            # In parts: one Arrow copy of a slice at a time, not of the whole log.
            with TableWriter(path, spec) as writer:
                for start in range(0, max(len(data.inter_user), 1), _WRITE_ROWS):
                    part = {k: v[start : start + _WRITE_ROWS] for k, v in columns.items()}
                    writer.write(pa.table(part))
        else:
            write_table(path, pa.table(columns), spec)
        files[spec.file_name] = sha256_file(path)
    write_json(folder / SnapshotFiles.MANIFEST, {**meta, "files": files})


def _ref(layout: Layout, snapshot_id: str, report: ImportReport) -> SnapshotRef:
    return SnapshotRef(
        root=str(layout.root),
        snapshot_id=snapshot_id,
        n_users=report.n_users,
        n_items=report.n_items,
        n_interactions=report.n_interactions,
    )


def run_import(
    layout: Layout, cfg: ImportConfig, *, block_bytes: int = BLOCK_BYTES
) -> ImportResult:
    """Import ``cfg``'s files as a snapshot under ``layout`` (or reuse the identical one),
    reading text ``block_bytes`` at a time (memory stays bounded whatever the file size).

    All-or-nothing: the tables are written into a private staging folder and committed by
    one rename; any failure (including strict-mode `DataImportError`, raised before anything
    is written) leaves no snapshot and no staging folder behind.
    """
    checksums = input_checksums(cfg)
    snapshot_id = import_snapshot_id(cfg, checksums)
    if snapshot_exists(layout, snapshot_id):
        meta = read_json(snapshot_path(layout, snapshot_id) / SnapshotFiles.MANIFEST)
        report = ImportReport.model_validate(meta["report"])
        log.info("reusing imported snapshot %s", snapshot_id)
        return ImportResult(ref=_ref(layout, snapshot_id, report), report=report, reused=True)
    data = build_import(cfg, checksums, block_bytes=block_bytes)
    meta = {
        "snapshot_id": snapshot_id,
        "source": "import",
        "importer_version": IMPORTER_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "config": cfg.model_dump(mode="json"),
        "inputs": {
            role: {"file": src.path, "sha256": checksums[role]}
            for role, src in _sources(cfg).items()
        },
        "counts": {
            "users": data.report.n_users,
            "items": data.report.n_items,
            "interactions": data.report.n_interactions,
            "categories": data.report.n_categories,
        },
        "report": data.report.model_dump(mode="json"),
    }
    staging = begin_snapshot(layout, snapshot_id)
    try:
        _write(staging, data, meta)
        commit_snapshot(layout, snapshot_id, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("imported snapshot %s: %s", snapshot_id, meta["counts"])
    return ImportResult(
        ref=_ref(layout, snapshot_id, data.report), report=data.report, reused=False
    )


def import_log(root: str | Path, cfg: ImportConfig | dict[str, Any]) -> ImportResult:
    """``run_import`` for a store root and a config (an ``ImportConfig`` or the same
    mapping as the ``import:`` section of a config file)."""
    config = cfg if isinstance(cfg, ImportConfig) else ImportConfig.model_validate(cfg)
    return run_import(Layout(Path(root)), config)


@dataclass(frozen=True)
class IdMap:
    """Stored int64 IDs of one entity and the raw IDs they stand for (n, sorted by ID)."""

    ids: npt.NDArray[np.int64]  # (n,)
    raw: ObjArray  # (n,) text

    def raw_to_id(self) -> dict[str, int]:
        return dict(zip(self.raw.tolist(), self.ids.tolist(), strict=True))

    def id_to_raw(self) -> dict[int, str]:
        return dict(zip(self.ids.tolist(), self.raw.tolist(), strict=True))

    def to_ids(self, raw_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """(m,) raw IDs -> (m,) stored IDs, -1 where unknown."""
        lookup = self.raw_to_id()
        return np.array([lookup.get(str(r), -1) for r in raw_ids], np.int64)

    def to_raw(self, ids: npt.ArrayLike) -> list[str]:
        """(m,) stored IDs -> m raw IDs; `KeyError` names the first unknown one."""
        lookup = self.id_to_raw()
        return [lookup[int(i)] for i in np.asarray(ids, np.int64)]


def load_id_map(folder: Path, entity: Literal["user", "item"]) -> IdMap:
    """The ID map of an imported snapshot folder (user_ids.parquet / item_ids.parquet)."""
    spec = USER_IDS if entity == "user" else ITEM_IDS
    table = read_table(folder / spec.file_name, spec).sort_by("id")
    return IdMap(
        table.column("id").to_numpy(), np.array(table.column("raw_id").to_pylist(), object)
    )

"""towerflow storage: every byte on disk. Table schemas and parquet I/O, model and index
artifacts, data snapshots, and versioned model publishing with a crash-safe CURRENT.

Importing it does no I/O and imports neither torch, faiss nor Prefect.
"""

from storage.artifacts import (
    load_index,
    load_model,
    read_json,
    save_index,
    save_model,
    write_json,
)
from storage.errors import (
    CorruptVersionError,
    NoCurrentVersionError,
    PublishConflictError,
    SchemaError,
    SnapshotNotFoundError,
    StorageError,
    VersionNotFoundError,
)
from storage.fs import atomic_path, atomic_write_bytes, fsync_dir, fsync_file, sha256_file
from storage.layout import Layout, SnapshotFiles, VersionFiles, validate_id
from storage.manifest import FileEntry, Lineage, Manifest
from storage.parquet import (
    ColumnSpec,
    TableSpec,
    TableWriter,
    VectorKind,
    arrow_to_vectors,
    iter_batches,
    read_num_rows,
    read_table,
    vector,
    vectors_to_arrow,
    write_table,
)
from storage.registry import Event, Registry, VersionRow
from storage.schemas import (
    ALL_TABLES,
    CATEGORIES,
    IMPRESSIONS,
    INTERACTIONS,
    ITEM_EMBEDDINGS,
    ITEMS,
    TRUTH_ITEMS,
    TRUTH_USERS,
    USERS,
    VERSION_ITEMS,
    VERSION_USERS,
)
from storage.settings import StorageSettings
from storage.snapshots import (
    begin_snapshot,
    commit_snapshot,
    list_snapshots,
    snapshot_exists,
    snapshot_path,
)
from storage.versions import (
    PUBLISH_STEPS,
    REQUIRED_FILES,
    PublishedVersion,
    VersionInfo,
    VersionStore,
)

__all__ = [
    "ALL_TABLES",
    "CATEGORIES",
    "IMPRESSIONS",
    "INTERACTIONS",
    "ITEMS",
    "ITEM_EMBEDDINGS",
    "PUBLISH_STEPS",
    "REQUIRED_FILES",
    "TRUTH_ITEMS",
    "TRUTH_USERS",
    "USERS",
    "VERSION_ITEMS",
    "VERSION_USERS",
    "ColumnSpec",
    "CorruptVersionError",
    "Event",
    "FileEntry",
    "Layout",
    "Lineage",
    "Manifest",
    "NoCurrentVersionError",
    "PublishConflictError",
    "PublishedVersion",
    "Registry",
    "SchemaError",
    "SnapshotFiles",
    "SnapshotNotFoundError",
    "StorageError",
    "StorageSettings",
    "TableSpec",
    "TableWriter",
    "VectorKind",
    "VersionFiles",
    "VersionInfo",
    "VersionNotFoundError",
    "VersionRow",
    "VersionStore",
    "arrow_to_vectors",
    "atomic_path",
    "atomic_write_bytes",
    "begin_snapshot",
    "commit_snapshot",
    "fsync_dir",
    "fsync_file",
    "iter_batches",
    "list_snapshots",
    "load_index",
    "load_model",
    "read_json",
    "read_num_rows",
    "read_table",
    "save_index",
    "save_model",
    "sha256_file",
    "snapshot_exists",
    "snapshot_path",
    "validate_id",
    "vector",
    "vectors_to_arrow",
    "write_json",
    "write_table",
]

"""Every path under the storage root is built here, and nowhere else.

The tree is::

    <root>/registry.sqlite                      CURRENT pointer, version rows, audit log
    <root>/database.json                        the PostgreSQL database holding the registry
                                                (shared stores only; no password)
    <root>/remote.json                          the object store this root caches (s3://...)
    <root>/catalogue.sqlite                     item upserts/retirements log (source of truth)
    <root>/publish.lock                         advisory lock serialising publishers
    <root>/inbox/<name>                         item batch files referenced by events
    <root>/data/<snapshot_id>/                  immutable data snapshots (parquet + snapshot.json)
    <root>/versions/<version_id>/               immutable published model versions
    <root>/staging/versions/<version_id>/       a version being written, before publish
    <root>/staging/snapshots/<snapshot_id>.<token>/   a snapshot being written, before commit
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["Layout", "SnapshotFiles", "VersionFiles", "validate_id"]

_ID_RE: Final = re.compile(r"^[A-Za-z0-9._-]+$")
_MAX_ID_LEN: Final = 200


def validate_id(kind: str, value: str) -> str:
    """Return `value` if it is safe as a single path component, else raise `ValueError`.

    Allowed: letters, digits, `.`, `_`, `-`; no `..`; no leading `.` (such names are
    reserved for temporary files and would also allow `.` itself, the parent folder).
    """
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValueError(
            f"invalid {kind} {value!r}: must match {_ID_RE.pattern} "
            "(letters, digits, '.', '_', '-')"
        )
    if ".." in value or value.startswith("."):
        raise ValueError(f"invalid {kind} {value!r}: must not contain '..' or start with '.'")
    if len(value) > _MAX_ID_LEN:
        raise ValueError(f"invalid {kind} {value!r}: longer than {_MAX_ID_LEN} characters")
    return value


class VersionFiles:
    """File names inside a published version folder."""

    MODEL_WEIGHTS: Final = "model.pt"
    MODEL_CONFIG: Final = "model.json"
    ITEM_EMBEDDINGS: Final = "item_embeddings.parquet"
    ITEMS: Final = "items.parquet"
    USERS: Final = "users.parquet"
    HISTORY: Final = "history.parquet"
    RECENT: Final = "recent.parquet"
    INDEX: Final = "index.faiss"
    METRICS: Final = "metrics.json"
    MANIFEST: Final = "manifest.json"
    # Item IDs still in the index but retired (indexes without remove_ids, e.g. HNSW).
    TOMBSTONES: Final = "tombstones.parquet"
    # Current vectors of items updated since such an index was built: its vectors for
    # them are stale (the embeddings' schema, sorted by ID; see model.incremental.Overlay).
    FRESH: Final = "fresh.parquet"
    # The catalogue entries the version includes: {"seq": int, "events": [...]}.
    CATALOGUE: Final = "catalogue.json"
    # A delta version (kind "delta") holds only these, the catalogue state and its
    # manifest: the upserted items' rows (VERSION_ITEMS) and vectors (the embeddings'
    # schema), and the IDs it retires (VERSION_TOMBSTONES' schema), each sorted by ID.
    DELTA_ITEMS: Final = "delta_items.parquet"
    DELTA_EMBEDDINGS: Final = "delta_embeddings.parquet"
    DELTA_RETIRED: Final = "delta_retired.parquet"
    # The run report's inputs and plots (optional: versions built outside the nightly
    # flow have none). training.json: per-epoch loss / validation / seconds;
    # metrics_history.json: headline test metrics of this version and its nightly ancestors.
    TRAINING: Final = "training.json"
    METRICS_HISTORY: Final = "metrics_history.json"
    PLOT_LOSS: Final = "plot_loss.png"
    PLOT_RECALL_AT_K: Final = "plot_recall_at_k.png"
    PLOT_HISTORY: Final = "plot_metric_history.png"


class SnapshotFiles:
    """File names inside a data snapshot folder (table files are `<TableSpec.name>.parquet`)."""

    USERS: Final = "users.parquet"
    ITEMS: Final = "items.parquet"
    CATEGORIES: Final = "categories.parquet"
    INTERACTIONS: Final = "interactions.parquet"
    IMPRESSIONS: Final = "impressions.parquet"
    TRUTH_USERS: Final = "truth_users.parquet"
    TRUTH_ITEMS: Final = "truth_items.parquet"
    MANIFEST: Final = "snapshot.json"


@dataclass(frozen=True)
class Layout:
    """Paths of one storage root. Pure: building a path touches no disk."""

    root: Path

    def __post_init__(self) -> None:
        # Accept str too, so `Layout("/data/tf")` from a CLI argument just works.
        object.__setattr__(self, "root", Path(self.root))

    @property
    def registry_db(self) -> Path:
        """SQLite file holding CURRENT, the version rows and the audit log."""
        return self.root / "registry.sqlite"

    @property
    def database_binding(self) -> Path:
        """The PostgreSQL database a shared store keeps its registry in (storage.database);
        absent: the registry is `registry_db`."""
        return self.root / "database.json"

    @property
    def remote_binding(self) -> Path:
        """The object store this root is the local cache of (storage.objectstore);
        absent: the root is the store."""
        return self.root / "remote.json"

    @property
    def fetch_dir(self) -> Path:
        """Where versions downloaded from the remote are verified before they enter the
        cache's `versions/` (storage.objectstore)."""
        return self.root / "staging" / "fetch"

    @property
    def catalogue_db(self) -> Path:
        """SQLite file holding the item catalogue log (`storage.catalogue`)."""
        return self.root / "catalogue.sqlite"

    @property
    def publish_lock(self) -> Path:
        """Lock file publishers hold around read-CURRENT -> build -> compare-and-swap."""
        return self.root / "publish.lock"

    @property
    def reports_dir(self) -> Path:
        """Standalone HTML run reports (`<version>.html`), regenerable from the versions."""
        return self.root / "reports"

    @property
    def nightly_lock(self) -> Path:
        """Lock file a nightly run holds from start to end: two never overlap."""
        return self.root / "nightly.lock"

    @property
    def inbox_dir(self) -> Path:
        """Folder of item batch files that events reference by path."""
        return self.root / "inbox"

    @property
    def data_dir(self) -> Path:
        """Folder of committed data snapshots."""
        return self.root / "data"

    def snapshot_dir(self, snapshot_id: str) -> Path:
        """Folder of the committed snapshot `snapshot_id`."""
        return self.data_dir / validate_id("snapshot id", snapshot_id)

    @property
    def versions_dir(self) -> Path:
        """Folder of published versions."""
        return self.root / "versions"

    def version_dir(self, version_id: str) -> Path:
        """Folder of the published version `version_id`."""
        return self.versions_dir / validate_id("version id", version_id)

    @property
    def staging_dir(self) -> Path:
        """Folder of work in progress (never read by consumers)."""
        return self.root / "staging"

    @property
    def staging_versions_dir(self) -> Path:
        """Folder of versions being written."""
        return self.staging_dir / "versions"

    def staging_version_dir(self, version_id: str) -> Path:
        """Folder where the files of version `version_id` are written before publish."""
        return self.staging_versions_dir / validate_id("version id", version_id)

    @property
    def staging_shards_dir(self) -> Path:
        """Folder of shard parts of staged versions and snapshots (`storage.shards`), by
        version id or snapshot staging folder name."""
        return self.staging_dir / "shards"

    @property
    def staging_snapshots_dir(self) -> Path:
        """Folder of snapshots being written."""
        return self.staging_dir / "snapshots"

    def staging_snapshot_dir(self, snapshot_id: str, token: str) -> Path:
        """Private folder of one writer of snapshot `snapshot_id`.

        `token` makes it unique per writer, so concurrent writers of the same snapshot
        never share a folder.
        """
        validate_id("snapshot id", snapshot_id)
        return self.staging_snapshots_dir / validate_id("staging token", f"{snapshot_id}.{token}")

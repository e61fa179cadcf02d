"""The SQLite registry: the CURRENT pointer, the rows of published versions and an audit
log of every move of CURRENT and every prune.

CURRENT only ever moves by compare-and-swap inside a `BEGIN IMMEDIATE` transaction with
`synchronous=FULL`, so it changes atomically and durably, and concurrent publishers or
rollbacks cannot silently overwrite each other.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Final, Literal, Protocol, TypeVar, get_args

from storage._sqlite import connect, read, transaction
from storage.errors import PublishConflictError, VersionNotFoundError
from storage.manifest import utc_now_iso

__all__ = ["KINDS", "Event", "Registry", "RegistryLike", "VersionKind", "VersionRow", "new_row"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What made a version: a nightly build (complete on its own files); an items version
# (its parent's files + catalogue entries, complete; unchanged files may be hard links);
# or a delta (only the items an event changed, read on top of its parent's chain down to
# the complete version it stacks on). Retention keeps each kind by its own rule (see
# `storage.retention`).
VersionKind = Literal["nightly", "items", "delta"]
KINDS: Final[tuple[VersionKind, ...]] = get_args(VersionKind)

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS current (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        version_id TEXT
    )""",
    "INSERT OR IGNORE INTO current (id, version_id) VALUES (1, NULL)",
    """CREATE TABLE IF NOT EXISTS versions (
        version_id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        published_at TEXT NOT NULL,
        parent TEXT,
        data_snapshot TEXT,
        kind TEXT,
        manifest_sha256 TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        ts TEXT NOT NULL,
        action TEXT NOT NULL,
        from_version TEXT,
        to_version TEXT
    )""",
)

_TABLES: Final = ("current", "versions", "events")

# Columns added after the first release: registries written before gain them on their
# first write; their old rows (and read-only readers of an old file) read them as None.
# `kind`: the store infers it from the manifest; `manifest_sha256`: the manifest of such a
# version is checked for structure only.
_LATE_COLUMNS: Final = ("kind", "manifest_sha256")
_MIGRATIONS: Final = {c: f"ALTER TABLE versions ADD COLUMN {c} TEXT" for c in _LATE_COLUMNS}

_ROW_COLUMNS: Final = "version_id, created_at, published_at, parent, data_snapshot"

_CAS_SQL: Final = "UPDATE current SET version_id = :new WHERE id = 1 AND version_id IS :expected"


@dataclass(frozen=True)
class VersionRow:
    """A registered (published) version as the registry records it."""

    version_id: str
    created_at: str
    published_at: str
    parent: str | None
    data_snapshot: str | None
    kind: VersionKind | None = None  # None: registered before kinds were recorded
    # SHA-256 of the version's manifest.json as published: the manifest holds every other
    # file's checksum, so its own lives here. None: registered before it was recorded.
    manifest_sha256: str | None = None


def new_row(
    version_id: str,
    expected: str | None,
    created_at: str,
    data_snapshot: str | None,
    kind: VersionKind,
    manifest_sha256: str | None,
) -> VersionRow:
    """The row a publish on top of ``expected`` registers, stamped now (both registries;
    its fields in column order). ValueError for an unknown ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"version kind must be one of {KINDS}, got {kind!r}")
    return VersionRow(
        version_id, created_at, utc_now_iso(), expected, data_snapshot, kind, manifest_sha256
    )


@dataclass(frozen=True)
class Event:
    """One audit-log entry: `publish`, `rollback` (from -> to) or `prune` (from = pruned)."""

    ts: str
    action: str
    from_version: str | None
    to_version: str | None


class RegistryLike(Protocol):
    """What a store's registry does, in SQLite (`Registry`) or PostgreSQL
    (`storage.pg_registry.PgRegistry`); `storage.backends.open_registry` picks one."""

    @property
    def path(self) -> object:
        """Where it lives (a file, or a URL without password), for messages."""
        ...

    def current(self) -> str | None: ...

    def get(self, version_id: str) -> VersionRow | None: ...

    def list_versions(self) -> list[VersionRow]: ...

    def events(self) -> list[Event]: ...

    def register_and_swap(
        self,
        version_id: str,
        *,
        expected: str | None,
        created_at: str,
        data_snapshot: str | None,
        kind: VersionKind = "nightly",
        manifest_sha256: str | None = None,
        swap: bool = True,
        parent: str | None = None,
    ) -> VersionRow: ...

    def compare_and_swap(
        self, expected: str | None, new: str, action: str = "rollback"
    ) -> None: ...

    def unregister(self, version_id: str) -> bool: ...


class Registry:
    """Access to `registry.sqlite`; every method is one short connection and transaction.

    Constructing it touches no disk. The database and its tables are created by the
    first write; reads never write (see `storage._sqlite.read`: they work on a read-only
    store), and a missing database, or one a writer left without tables, reads as an
    empty registry. Writes to a read-only store raise `StoreReadOnlyError`.
    """

    def __init__(self, path: Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._schema_ready = False

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A writer's connection (the schema created on the first one)."""
        schema = () if self._schema_ready else _SCHEMA
        with connect(self.path, self.busy_timeout_s, schema, wal=False) as conn:
            if not self._schema_ready:
                _migrate(conn)
            self._schema_ready = True
            yield conn

    def _read(self, query: Callable[[sqlite3.Connection], T]) -> T | None:
        """`query` on a read-only view; None when nothing was ever registered."""
        return read(self.path, self.busy_timeout_s, query, tables=_TABLES)

    def current(self) -> str | None:
        """The version CURRENT names, or None if nothing was published."""
        return self._read(_current)

    def get(self, version_id: str) -> VersionRow | None:
        """The registered row of `version_id`, or None."""
        row = self._read(
            lambda conn: conn.execute(
                f"SELECT {_ROW_COLUMNS}, {_late_columns(conn)} FROM versions WHERE version_id = ?",
                (version_id,),
            ).fetchone()
        )
        return None if row is None else VersionRow(*row)

    def list_versions(self) -> list[VersionRow]:
        """All registered versions, most recently published first."""
        rows = self._read(
            lambda conn: conn.execute(
                f"SELECT {_ROW_COLUMNS}, {_late_columns(conn)} FROM versions "
                "ORDER BY published_at DESC, rowid DESC"
            ).fetchall()
        )
        return [VersionRow(*r) for r in rows or []]

    def events(self) -> list[Event]:
        """The audit log, oldest first."""
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT ts, action, from_version, to_version FROM events ORDER BY rowid"
            ).fetchall()
        )
        return [Event(*r) for r in rows or []]

    def register_and_swap(
        self,
        version_id: str,
        *,
        expected: str | None,
        created_at: str,
        data_snapshot: str | None,
        kind: VersionKind = "nightly",
        manifest_sha256: str | None = None,
        swap: bool = True,
        parent: str | None = None,
    ) -> VersionRow:
        """Insert the version row and CAS CURRENT `expected` -> `version_id`, in one
        transaction: either both happen or neither. Raises `PublishConflictError`.
        Without `swap`, only the row (`expected`: the version's parent) and a `register`
        event: a version a later publish of the same writer stacks on. `parent`: the
        row's parent when it is not `expected` (a version stacked on one registered just
        before it, swapped in place of another: compaction's rebased deltas)."""
        row = new_row(
            version_id, parent or expected, created_at, data_snapshot, kind, manifest_sha256
        )
        with self._connect() as conn, transaction(conn):
            conn.execute(
                f"INSERT INTO versions ({_ROW_COLUMNS}, {', '.join(_LATE_COLUMNS)}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                astuple(row),
            )
            if swap:
                _cas(conn, expected, version_id)
            _event(conn, "publish" if swap else "register", expected, version_id)
        if swap:
            log.info("CURRENT %s -> %s (publish)", expected, version_id)
        return row

    def compare_and_swap(self, expected: str | None, new: str, action: str = "rollback") -> None:
        """Move CURRENT `expected` -> `new` (a registered version) and log `action`.

        Raises `VersionNotFoundError` if `new` is not registered (checked in the same
        transaction, so a concurrent prune cannot slip in) or `PublishConflictError`.
        """
        with self._connect() as conn, transaction(conn):
            if (
                conn.execute("SELECT 1 FROM versions WHERE version_id = ?", (new,)).fetchone()
                is None
            ):
                raise VersionNotFoundError(f"version {new!r} is not registered in {self.path}")
            _cas(conn, expected, new)
            _event(conn, action, expected, new)
        log.info("CURRENT %s -> %s (%s)", expected, new, action)

    def unregister(self, version_id: str) -> bool:
        """Delete the row of `version_id` unless it is CURRENT; True if deleted.

        The CURRENT check is inside the DELETE, so a concurrent rollback to this version
        either commits first (and the row stays) or finds the row gone.
        """
        with self._connect() as conn, transaction(conn):
            cur = conn.execute(
                "DELETE FROM versions WHERE version_id = ? AND version_id IS NOT "
                "(SELECT version_id FROM current WHERE id = 1)",
                (version_id,),
            )
            if cur.rowcount == 0:
                return False
            _event(conn, "prune", version_id, None)
        return True


def _columns(conn: sqlite3.Connection) -> set[str]:
    return {r[1] for r in conn.execute("PRAGMA table_info(versions)")}


def _late_columns(conn: sqlite3.Connection) -> str:
    """The select list of `_LATE_COLUMNS`: NULL for each one an old registry lacks
    (read-only readers cannot migrate it)."""
    have = _columns(conn)
    return ", ".join(c if c in have else "NULL" for c in _LATE_COLUMNS)


def _migrate(conn: sqlite3.Connection) -> None:
    """Add the columns a registry written by older code lacks (one transaction)."""
    missing = [sql for col, sql in _MIGRATIONS.items() if col not in _columns(conn)]
    if missing:
        with transaction(conn):
            for sql in missing:
                conn.execute(sql)


def _current(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT version_id FROM current WHERE id = 1").fetchone()
    return None if row is None else row[0]


def _cas(conn: sqlite3.Connection, expected: str | None, new: str) -> None:
    cur = conn.execute(_CAS_SQL, {"new": new, "expected": expected})
    if cur.rowcount == 0:
        raise PublishConflictError(expected=expected, actual=_current(conn), new=new)


def _event(
    conn: sqlite3.Connection, action: str, from_version: str | None, to_version: str | None
) -> None:
    conn.execute(
        "INSERT INTO events (ts, action, from_version, to_version) VALUES (?, ?, ?, ?)",
        (utc_now_iso(), action, from_version, to_version),
    )

"""The registry of a shared store in PostgreSQL: CURRENT, the version rows and the audit
log, with the SQLite registry's semantics (``storage.registry``) across machines.

Every writing transaction first locks CURRENT's row (``SELECT ... FOR UPDATE``), so
writers run one after another as under SQLite's ``BEGIN IMMEDIATE``: a rollback's "is the
target registered" check and its swap cannot interleave with a prune, and the swap is the
same compare-and-swap (``UPDATE ... WHERE version_id IS NOT DISTINCT FROM :expected``).
A commit is durable once PostgreSQL acknowledges it (``synchronous_commit`` is the
server's; its default, on, waits for the WAL flush). A process killed mid-transaction
leaves nothing: the server rolls the transaction back when the connection drops.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple
from typing import Any, Final, TypeVar

import psycopg
from psycopg import sql

from storage.database import DatabaseRef, database_errors
from storage.errors import PublishConflictError, VersionNotFoundError
from storage.manifest import utc_now_iso
from storage.pg_pool import pooled
from storage.registry import Event, VersionKind, VersionRow, new_row

__all__ = ["PgRegistry", "PgTables", "ensure_schema"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_ROW_COLUMNS: Final = (
    "version_id, created_at, published_at, parent, data_snapshot, kind, manifest_sha256"
)

# Schema set-up runs under this advisory lock: concurrent CREATE ... IF NOT EXISTS of
# one table can still collide in PostgreSQL's catalogue.
_SCHEMA_LOCK: Final = 0x746F776572666C6F  # "towerflo"


# Statements with {s} for the schema (see PgRegistry._q).
_SCHEMA_SQL: Final = (
    "CREATE SCHEMA IF NOT EXISTS {s}",
    """CREATE TABLE IF NOT EXISTS {s}.current (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version_id TEXT
        )""",
    "INSERT INTO {s}.current (id, version_id) VALUES (1, NULL) ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS {s}.versions (
            seq BIGSERIAL UNIQUE,
            version_id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            published_at TEXT NOT NULL,
            parent TEXT,
            data_snapshot TEXT,
            kind TEXT,
            manifest_sha256 TEXT
        )""",
    """CREATE TABLE IF NOT EXISTS {s}.events (
            seq BIGSERIAL PRIMARY KEY,
            ts TEXT NOT NULL,
            action TEXT NOT NULL,
            from_version TEXT,
            to_version TEXT
        )""",
    # The item catalogue (storage.pg_catalogue), as catalogue.sqlite's tables.
    """CREATE TABLE IF NOT EXISTS {s}.catalogue_entries (
            seq BIGSERIAL PRIMARY KEY,
            event_id TEXT NOT NULL,
            item_id BIGINT NOT NULL,
            op TEXT NOT NULL CHECK (op IN ('upsert', 'retire')),
            category INTEGER,
            content BYTEA,
            digest TEXT,
            ts TEXT NOT NULL
        )""",
    "CREATE INDEX IF NOT EXISTS catalogue_entries_item ON {s}.catalogue_entries (item_id, seq)",
    """CREATE TABLE IF NOT EXISTS {s}.catalogue_events (
            event_id TEXT PRIMARY KEY,
            op TEXT NOT NULL,
            received_at TEXT NOT NULL,
            n_items INTEGER NOT NULL,
            n_changed INTEGER NOT NULL,
            last_seq BIGINT NOT NULL
        )""",
    # Who holds an advisory lock of storage.backends.store_lock, for a waiter's error.
    "CREATE TABLE IF NOT EXISTS {s}.lock_owners (name TEXT PRIMARY KEY, owner TEXT, since TEXT)",
)


def ensure_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create ``schema``'s tables where missing (one transaction, under an advisory lock:
    concurrent ``CREATE ... IF NOT EXISTS`` of one table can collide in the catalogue).

    The lock is taken in a transaction of its own, before the one that creates: a session
    reads other sessions' catalogue changes when a transaction starts, so a reused
    (pooled) connection that waited for the lock inside the creating transaction would
    still believe, from its cache, that a schema created meanwhile is missing."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))  # held past COMMIT
    try:
        with conn.transaction():
            for stmt in _SCHEMA_SQL:
                conn.execute(sql.SQL(stmt).format(s=sql.Identifier(schema)))
    finally:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


class PgTables:
    """The tables of one store's schema in ``ref``'s database: each call is one short
    transaction on a pooled connection (``storage.pg_pool``; constructing it connects to
    nothing); the schema is
    made by the first write, and reads before it see nothing and create nothing."""

    # A table that exists once the schema does (what reads probe for).
    _probe: str = "events"

    def __init__(self, ref: DatabaseRef) -> None:
        self.ref = ref
        self.path = ref.url  # what errors name, as the SQLite files name their path
        self._schema_ready = False

    def _q(self, text: str) -> sql.Composed:
        """``text`` with ``{s}`` replaced by this store's schema, quoted."""
        return sql.SQL(text).format(s=sql.Identifier(self.ref.schema))

    @contextmanager
    def _transaction(self, first: sql.Composed) -> Iterator[psycopg.Connection[Any]]:
        """A writer's transaction that starts with ``first`` (the lock that orders the
        writers); the schema is made on the first one."""
        with database_errors(self.ref), pooled(self.ref) as conn:
            if not self._schema_ready:
                ensure_schema(conn, self.ref.schema)
                self._schema_ready = True
            with conn.transaction():
                conn.execute(first)
                yield conn

    def _read(self, query: Callable[[psycopg.Connection[Any]], T]) -> T | None:
        """``query`` in one read-only snapshot; None when the schema does not exist."""
        with database_errors(self.ref), pooled(self.ref) as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            found = conn.execute(
                "SELECT to_regclass(%s)", (f'"{self.ref.schema}".{self._probe}',)
            ).fetchone()
            if found is None or found[0] is None:
                return None
            return query(conn)


class PgRegistry(PgTables):
    """The registry in ``ref``'s database; the methods and errors of
    ``storage.registry.Registry``. Reads of a database where nothing was ever registered
    read as an empty registry."""

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """A transaction that holds CURRENT's row lock."""
        with self._transaction(
            self._q("SELECT version_id FROM {s}.current WHERE id = 1 FOR UPDATE")
        ) as conn:
            yield conn

    # -- the Registry interface ----------------------------------------------------------

    def current(self) -> str | None:
        """The version CURRENT names, or None if nothing was published."""
        return self._read(self._current)

    def _current(self, conn: psycopg.Connection[Any]) -> str | None:
        row = conn.execute(self._q("SELECT version_id FROM {s}.current WHERE id = 1")).fetchone()
        return None if row is None else row[0]

    def get(self, version_id: str) -> VersionRow | None:
        """The registered row of ``version_id``, or None."""
        row = self._read(
            lambda conn: conn.execute(
                self._q(f"SELECT {_ROW_COLUMNS} FROM {{s}}.versions WHERE version_id = %s"),
                (version_id,),
            ).fetchone()
        )
        return None if row is None else VersionRow(*row)

    def list_versions(self) -> list[VersionRow]:
        """All registered versions, most recently published first."""
        rows = self._read(
            lambda conn: conn.execute(
                self._q(
                    f"SELECT {_ROW_COLUMNS} FROM {{s}}.versions "
                    "ORDER BY published_at DESC, seq DESC"
                )
            ).fetchall()
        )
        return [VersionRow(*r) for r in rows or []]

    def events(self) -> list[Event]:
        """The audit log, oldest first."""
        rows = self._read(
            lambda conn: conn.execute(
                self._q("SELECT ts, action, from_version, to_version FROM {s}.events ORDER BY seq")
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
        """Insert the version row and CAS CURRENT ``expected`` -> ``version_id`` in one
        transaction. Raises ``PublishConflictError``. Without ``swap``, only the row and a
        ``register`` event (``expected``: the version's parent)."""
        row = new_row(
            version_id, parent or expected, created_at, data_snapshot, kind, manifest_sha256
        )
        with self._write() as conn:
            conn.execute(
                self._q(
                    f"INSERT INTO {{s}}.versions ({_ROW_COLUMNS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
                ),
                astuple(row),
            )
            if swap:
                self._cas(conn, expected, version_id)
            self._event(conn, "publish" if swap else "register", expected, version_id)
        if swap:
            log.info("CURRENT %s -> %s (publish)", expected, version_id)
        return row

    def compare_and_swap(self, expected: str | None, new: str, action: str = "rollback") -> None:
        """Move CURRENT ``expected`` -> ``new`` (a registered version) and log ``action``.
        Raises ``VersionNotFoundError`` or ``PublishConflictError``."""
        with self._write() as conn:
            found = conn.execute(
                self._q("SELECT 1 FROM {s}.versions WHERE version_id = %s"),
                (new,),
            ).fetchone()
            if found is None:
                raise VersionNotFoundError(f"version {new!r} is not registered in {self.path}")
            self._cas(conn, expected, new)
            self._event(conn, action, expected, new)
        log.info("CURRENT %s -> %s (%s)", expected, new, action)

    def unregister(self, version_id: str) -> bool:
        """Delete the row of ``version_id`` unless it is CURRENT; True if deleted."""
        with self._write() as conn:
            cur = conn.execute(
                self._q(
                    "DELETE FROM {s}.versions WHERE version_id = %s AND version_id IS "
                    "DISTINCT FROM (SELECT version_id FROM {s}.current WHERE id = 1)"
                ),
                (version_id,),
            )
            if cur.rowcount == 0:
                return False
            self._event(conn, "prune", version_id, None)
        return True

    def _cas(self, conn: psycopg.Connection[Any], expected: str | None, new: str) -> None:
        cur = conn.execute(
            self._q(
                "UPDATE {s}.current SET version_id = %(new)s "
                "WHERE id = 1 AND version_id IS NOT DISTINCT FROM %(expected)s"
            ),
            {"new": new, "expected": expected},
        )
        if cur.rowcount == 0:
            raise PublishConflictError(expected=expected, actual=self._current(conn), new=new)

    def _event(
        self,
        conn: psycopg.Connection[Any],
        action: str,
        from_version: str | None,
        to_version: str | None,
    ) -> None:
        conn.execute(
            self._q(
                "INSERT INTO {s}.events (ts, action, from_version, to_version) "
                "VALUES (%s, %s, %s, %s)"
            ),
            (utc_now_iso(), action, from_version, to_version),
        )

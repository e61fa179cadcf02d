"""The SQLite plumbing the registry and the item catalogue share: durable connections
that create their schema once, and explicit transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = ["connect", "transaction"]


@contextmanager
def connect(
    path: Path, busy_timeout_s: float, schema: Sequence[str] = (), *, wal: bool = False
) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` (parent folders created), closed on exit.

    isolation_level=None: no implicit transactions; callers issue BEGIN IMMEDIATE through
    ``transaction`` so the write lock is taken up front instead of on upgrade (which can
    deadlock). synchronous FULL fsyncs the journal at commit, so a committed write survives
    power loss. ``wal`` lets readers run while a writer appends. ``schema`` statements run
    in one transaction (pass them until they have run once per process).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    with closing(conn):
        if wal:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        if schema:
            with transaction(conn):
                for stmt in schema:
                    conn.execute(stmt)
        yield conn


@contextmanager
def transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """Commit on success, roll back on any exception. IMMEDIATE for writers (the write
    lock up front); a plain BEGIN gives readers one consistent snapshot across SELECTs."""
    conn.execute(begin)
    try:
        yield
    except BaseException:
        # SQLite may already have rolled back on some errors (e.g. disk full).
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

"""The SQLite plumbing the registry and the item catalogue share: durable writer
connections that create their schema once, reads that write nothing, and explicit
transactions."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Final, TypeVar

from storage.errors import StorageError, StoreReadOnlyError

__all__ = ["READ_ONLY_ERRNOS", "connect", "read", "transaction"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# errno values of a write refused because the store is not writable (a read-only mount,
# permissions, an immutable file).
READ_ONLY_ERRNOS: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})

# Reads of a WAL database in a read-only folder that has no -wal file (see `read`).
_IMMUTABLE_ATTEMPTS: Final = 5


@contextmanager
def connect(
    path: Path, busy_timeout_s: float, schema: Sequence[str] = (), *, wal: bool = False
) -> Iterator[sqlite3.Connection]:
    """A writer's connection to ``path`` (parent folders created), closed on exit.

    isolation_level=None: no implicit transactions; callers issue BEGIN IMMEDIATE through
    ``transaction`` so the write lock is taken up front instead of on upgrade (which can
    deadlock). synchronous FULL fsyncs the journal at commit, so a committed write survives
    power loss. ``wal`` lets readers run while a writer appends. ``schema`` statements run
    in one transaction (pass them until they have run once per process).

    Raises ``StoreReadOnlyError`` (the original error chained) when the folder or the
    database cannot be written, from the set-up or from the caller's statements.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in READ_ONLY_ERRNOS:
            raise StoreReadOnlyError(path, str(e)) from e
        raise
    try:
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
    except sqlite3.OperationalError as e:
        if _refused_write(e, path):
            raise StoreReadOnlyError(path, str(e)) from e
        _raise_if_disk_full(e, path)
        raise


def read(
    path: Path,
    busy_timeout_s: float,
    query: Callable[[sqlite3.Connection], T],
    *,
    tables: Collection[str],
    wal: bool = False,
) -> T | None:
    """``query(conn)`` in one read transaction on a connection that cannot write; None
    when the database does not exist or lacks one of ``tables`` (no writer got that far:
    an empty store). Never creates the database, runs no schema statement, changes no
    setting stored in the file.

    The connection depends on whether this process may write the folder:

    * yes: a normal connection with ``PRAGMA query_only``, so that SQLite does what any
      connection does: roll back the journal of a writer that crashed, and for a WAL
      database (``wal``) create the -wal/-shm files it needs and remove them on close
      (a ``mode=ro`` connection would leave them behind);
    * no (a read-only store): ``mode=ro``. A rollback-journal database reads as usual.
      A WAL database reads this way while a writer elsewhere keeps its -wal and -shm
      files; with no -wal file (every writer closed, so the database file holds every
      commit) SQLite cannot open it read-only, and it is read with ``immutable=1``: no
      locks, so the read is retried unless the database file and the absent -wal file
      look the same before and after it.
    """
    if not path.is_file():
        return None
    if os.access(path.parent, os.W_OK):
        try:
            return _read_query_only(path, busy_timeout_s, query, tables)
        except sqlite3.OperationalError as e:
            # A WAL reader creates its -shm file: on a full disk even reads fail.
            _raise_if_disk_full(e, path)
            raise
    uri = path.absolute().as_uri()
    for attempt in range(_IMMUTABLE_ATTEMPTS):
        try:
            return _read_uri(f"{uri}?mode=ro", busy_timeout_s, query, tables)
        except sqlite3.OperationalError as e:
            code = e.sqlite_errorcode & 0xFF
            if code == sqlite3.SQLITE_READONLY:
                detail = f"{e}: a writer crashed mid-transaction; a read-write open recovers it"
                raise StoreReadOnlyError(path, detail) from e
            if not (wal and code == sqlite3.SQLITE_CANTOPEN):
                raise
        before = _signature(path)
        if before[-1] <= 0:
            result = _read_uri(f"{uri}?mode=ro&immutable=1", busy_timeout_s, query, tables)
            if _signature(path) == before:
                return result
            log.info("%s changed while read without locks; reading again", path)
        time.sleep(0.01 * 2**attempt)
    if before[-1] > 0:
        # A -wal with commits but no -shm: a writer died, and only a writer can recover.
        detail = f"{path.name}-wal holds commits that only a read-write open can read"
        raise StoreReadOnlyError(path, detail)
    raise StorageError(f"{path} kept changing while being read from a read-only folder")


def _read_query_only(
    path: Path,
    busy_timeout_s: float,
    query: Callable[[sqlite3.Connection], T],
    tables: Collection[str],
) -> T | None:
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    with closing(conn):
        conn.execute("PRAGMA query_only = ON")
        return _query(conn, query, tables)


def _read_uri(
    uri: str,
    busy_timeout_s: float,
    query: Callable[[sqlite3.Connection], T],
    tables: Collection[str],
) -> T | None:
    conn = sqlite3.connect(uri, timeout=busy_timeout_s, isolation_level=None, uri=True)
    with closing(conn):
        return _query(conn, query, tables)


def _query(
    conn: sqlite3.Connection, query: Callable[[sqlite3.Connection], T], tables: Collection[str]
) -> T | None:
    with transaction(conn, "BEGIN"):
        names = list(tables)
        found = conn.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN "
            f"({', '.join('?' * len(names))})",
            names,
        ).fetchone()[0]
        return query(conn) if found == len(names) else None


def _signature(path: Path) -> tuple[int, int, int, int, int]:
    """Identity, size and times of the database file, and the size of its -wal file (-1:
    none). A writer changes one of them before it changes what a reader sees."""
    st = path.stat()
    try:
        wal_size = path.with_name(path.name + "-wal").stat().st_size
    except FileNotFoundError:
        wal_size = -1
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, wal_size


# Below this many free bytes an SQLite I/O error is reported as the disk being full.
_NEARLY_FULL_BYTES: Final = 1 << 20


def _raise_if_disk_full(e: sqlite3.OperationalError, path: Path) -> None:
    """Re-raise SQLite's "database or disk is full" or a "disk I/O error" on a folder with
    (almost) no free space as `OSError(ENOSPC)` naming the file, so callers and the CLI
    see one kind of failure for a full disk."""
    code = e.sqlite_errorcode & 0xFF
    if code == sqlite3.SQLITE_FULL:
        full = True
    elif code == sqlite3.SQLITE_IOERR:
        try:
            st = os.statvfs(path.parent)
            full = st.f_bavail * st.f_frsize < _NEARLY_FULL_BYTES
        except OSError:
            full = False
    else:
        full = False
    if full:
        raise OSError(errno.ENOSPC, f"No space left on device for {path} (SQLite: {e})") from e


def _refused_write(e: sqlite3.OperationalError, path: Path) -> bool:
    """Whether SQLite failed because the database or its folder is not writable."""
    code = e.sqlite_errorcode & 0xFF
    if code == sqlite3.SQLITE_READONLY:
        return True
    # A new database, journal or WAL file that the folder does not allow to create.
    return code == sqlite3.SQLITE_CANTOPEN and not os.access(path.parent, os.W_OK)


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

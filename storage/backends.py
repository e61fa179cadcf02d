"""The registry and the locks of a store, local or shared.

A local store (the embedded default) keeps its registry in ``registry.sqlite`` and
serialises publishers and nightly runs with ``flock`` on files in its root: both hold
on one machine only. A store bound to PostgreSQL (``storage.database``) keeps its
registry there and takes the same locks as PostgreSQL advisory locks, which hold for
every machine connected to that server. Like ``flock``, an advisory lock dies with its
holder: the server releases it when the holder's connection drops (a killed process, a
lost machine once TCP keep-alive gives up).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Literal

from storage.catalogue import CatalogueLike, CatalogueLog
from storage.database import DatabaseRef, connect, database_errors, read_binding
from storage.fs import file_lock
from storage.layout import Layout
from storage.manifest import utc_now_iso
from storage.registry import Registry, RegistryLike

__all__ = ["LockName", "StoreLockTimeout", "open_catalogue", "open_registry", "store_lock"]

log = logging.getLogger(__name__)

LockName = Literal["publish", "nightly"]


class StoreLockTimeout(TimeoutError):
    """A store lock (``publish`` or ``nightly``) stayed held past the caller's timeout.
    ``name`` tells it from a TimeoutError raised inside the ``with`` block."""

    def __init__(self, name: LockName, message: str) -> None:
        super().__init__(message)
        self.name = name


def open_registry(layout: Layout) -> RegistryLike:
    """The registry of the store at ``layout``: PostgreSQL when the store is bound to a
    database, else ``registry.sqlite``. Connects to nothing."""
    ref = read_binding(layout)
    if ref is None:
        return Registry(layout.registry_db)
    from storage.pg_registry import PgRegistry  # here: SQLite stores never load psycopg

    return PgRegistry(ref)


def open_catalogue(layout: Layout) -> CatalogueLike:
    """The item catalogue of the store at ``layout``: PostgreSQL when the store is bound
    to a database, else ``catalogue.sqlite``. Connects to nothing."""
    ref = read_binding(layout)
    if ref is None:
        return CatalogueLog(layout.catalogue_db)
    from storage.pg_catalogue import PgCatalogueLog  # here: SQLite stores never load psycopg

    return PgCatalogueLog(ref)


@contextmanager
def store_lock(
    layout: Layout, name: LockName, timeout_s: float, owner: str | None = None
) -> Iterator[None]:
    """Hold the store's ``name`` lock for the ``with`` block: ``flock`` on a local store,
    a PostgreSQL advisory lock on a shared one. With ``owner``, the holder records who it
    is and a waiter that gives up names it. Raises ``StoreLockTimeout`` after
    ``timeout_s`` (0: try once)."""
    ref = read_binding(layout)
    with ExitStack() as stack:
        try:
            if ref is None:
                path = layout.publish_lock if name == "publish" else layout.nightly_lock
                stack.enter_context(file_lock(path, timeout_s, owner=owner))
            else:
                stack.enter_context(_advisory_lock(ref, name, timeout_s, owner))
        except TimeoutError as e:
            raise StoreLockTimeout(name, str(e)) from None
        yield


@contextmanager
def _advisory_lock(
    ref: DatabaseRef, name: LockName, timeout_s: float, owner: str | None, poll_s: float = 0.05
) -> Iterator[None]:
    """A session advisory lock keyed by (schema, name), held on a connection of its own
    for the block; the owner row is written after taking it and cleared before release."""
    import psycopg
    from psycopg import sql

    from storage.pg_registry import ensure_schema

    key = f"towerflow:{ref.schema}:{name}"
    where = f"{ref.url} lock {name!r}"
    table = sql.SQL("{s}.lock_owners").format(s=sql.Identifier(ref.schema))
    with database_errors(ref), connect(ref, autocommit=True) as conn:
        ensure_schema(conn, ref.schema)
        deadline = time.monotonic() + timeout_s
        while True:
            got = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,))
            row = got.fetchone()
            if row is not None and row[0]:
                break
            if time.monotonic() >= deadline:
                held = conn.execute(
                    sql.SQL("SELECT owner, since FROM {t} WHERE name = %s").format(t=table),
                    (name,),
                ).fetchone()
                by = f" by {held[0]}" if held and held[0] else ""
                raise TimeoutError(f"{where}: lock still held after {timeout_s} s{by}")
            time.sleep(poll_s)
        try:
            if owner is not None:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {t} (name, owner, since) VALUES (%s, %s, %s) "
                        "ON CONFLICT (name) DO UPDATE SET owner = EXCLUDED.owner, "
                        "since = EXCLUDED.since"
                    ).format(t=table),
                    (name, owner, utc_now_iso()),
                )
            yield
        finally:
            try:
                if owner is not None:
                    conn.execute(
                        sql.SQL("DELETE FROM {t} WHERE name = %s").format(t=table), (name,)
                    )
                conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
            except psycopg.Error as e:
                # The connection is gone, and with it the lock: do not hide the block's error.
                log.warning("%s: releasing the lock failed (%s); the server dropped it", where, e)

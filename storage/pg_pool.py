"""Pooled connections to a store's PostgreSQL database, one small pool per process and
server.

Why a pool: every registry or catalogue call is one short transaction, and a new
connection costs a TCP (or TLS) handshake, authentication and a server process forked
for it, several milliseconds and far more than the call itself. An API replica polls
CURRENT every second and a publish makes a dozen calls; reusing connections keeps both
off the server's fork path. Why ``psycopg_pool``: it is psycopg's own pool (the same
maintainers), with health checks, reconnection and idle trimming that a hand-written
cache would have to repeat.

Rules that keep it safe:
- One pool per server, database, user, options and password, never per schema: the
  schema is in every query (``PgTables._q``), so the stores of one database share it.
- A connection is checked on the way out (``ConnectionPool.check_connection``: one empty
  round trip), so a server restart costs a reconnect, not a failed call.
- A forked child forgets its parent's pools (``os.register_at_fork``): their worker
  threads do not exist there and their sockets are the parent's. psycopg never closes a
  connection from a process that did not open it.
- The first use in a process connects directly once, so a wrong password or an
  unreachable server fails at once with libpq's reason, not after a pool timeout.
- Session state does not travel between callers: advisory locks, which live as long as
  their session, take a connection of their own (``storage.database.connect``).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from storage.database import (
    CONNECT_TIMEOUT_S,
    DatabaseRef,
    DatabaseUnavailableError,
    connect,
    connection_kwargs,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["close_pools", "pooled"]

log = logging.getLogger(__name__)

# Connections a process keeps: one idle (the steady state of a poller or a CLI command),
# up to four when threads of one process call at once (a Prefect flow's concurrent
# tasks); extra ones close after a minute idle.
_MIN_SIZE: Final = 1
_MAX_SIZE: Final = 4
_MAX_IDLE_S: Final = 60.0

_pools: dict[tuple[Any, ...], ConnectionPool] = {}
_lock = threading.Lock()


@contextmanager
def pooled(ref: DatabaseRef) -> Iterator[psycopg.Connection[Any]]:
    """A connection to ``ref``'s database for the block, returned to this process's pool
    after it (rolled back if the block left a transaction open; discarded if it broke).
    Raises DatabaseUnavailableError naming the server when none can be had."""
    from psycopg_pool import PoolTimeout

    pool = _pool(ref)
    try:
        conn = pool.getconn(timeout=CONNECT_TIMEOUT_S)
    except PoolTimeout:
        # The pool could not connect in time: one direct attempt names why (refused,
        # authentication, ...); if it works, the pool was only busy.
        connect(ref).close()
        raise DatabaseUnavailableError(
            f"the store's database {ref.url}: no pooled connection within "
            f"{CONNECT_TIMEOUT_S} s ({_MAX_SIZE} in use by this process)"
        ) from None
    try:
        yield conn
    finally:
        pool.putconn(conn)


def _pool(ref: DatabaseRef) -> ConnectionPool:
    from psycopg_pool import ConnectionPool

    kwargs = connection_kwargs(ref)
    key = tuple(sorted(kwargs.items()))
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            connect(ref).close()  # a clear error now, rather than a pool timeout later
            pool = ConnectionPool(
                kwargs=kwargs,
                min_size=_MIN_SIZE,
                max_size=_MAX_SIZE,
                max_idle=_MAX_IDLE_S,
                check=ConnectionPool.check_connection,
                num_workers=1,
                name=f"towerflow {ref.host}:{ref.port}/{ref.dbname}",
                open=False,
            )
            pool.open()
            _pools[key] = pool
        return pool


def close_pools() -> None:
    """Close this process's pools (at exit; tests that stop their server call it)."""
    global _pools
    with _lock:
        pools, _pools = _pools, {}
    for pool in pools.values():
        pool.close(timeout=1.0)


def _forget_after_fork() -> None:
    global _pools, _lock
    _pools, _lock = {}, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(close_pools)

"""Pooled connections to the store's database (storage.pg_pool), against a real server:
calls reuse a connection, a connection the server dropped is replaced without a failed
call, a forked child opens its own and leaves its parent's alone, and a wrong password
still fails at once with the server's reason."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from storage import Layout, VersionStore
from storage.database import DatabaseRef, DatabaseUnavailableError, bind_database
from storage.pg_pool import pooled
from tests.storage.publisher import publish_staged, stage_version


def _backend(ref: DatabaseRef) -> int:
    with pooled(ref) as conn:
        return conn.info.backend_pid


def _store(pg_url: str, tmp_path: Path) -> VersionStore:
    layout = Layout(tmp_path / "store")
    bind_database(layout, pg_url)
    store = VersionStore(layout)
    publish_staged(store, stage_version(store, "v1"), None)
    return store


def test_calls_reuse_a_few_connections(pg_url: str, tmp_path: Path) -> None:
    store = _store(pg_url, tmp_path)
    ref = DatabaseRef.from_url(pg_url)
    backends = set()
    for _ in range(40):
        assert store.current() == "v1"
        backends.add(_backend(ref))
    assert len(backends) <= 4  # the pool's size, not one server process per call


def test_a_dropped_connection_is_replaced_without_a_failed_call(
    pg_url: str, tmp_path: Path
) -> None:
    store = _store(pg_url, tmp_path)
    ref = DatabaseRef.from_url(pg_url)
    before = {_backend(ref) for _ in range(8)}  # idle connections rotate: all of them
    # The server ends every session of this process's pool (a restart, a failover or an
    # idle timeout do the same).
    with psycopg.connect(pg_url.split("?")[0], autocommit=True) as admin:
        for pid in before:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert store.current() == "v1"
    assert _backend(ref) not in before


def test_a_forked_child_uses_its_own_connections(pg_url: str, tmp_path: Path) -> None:
    store = _store(pg_url, tmp_path)
    ref = DatabaseRef.from_url(pg_url)
    for _ in range(3):
        store.current()
    with pooled(ref) as held:  # a parent's connection, in use while the child lives
        existing = {row[0] for row in held.execute("SELECT pid FROM pg_stat_activity")}
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report its backend and CURRENT, then exit at once
            code = 1
            try:
                os.write(write, f"{_backend(ref)} {store.current()}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        _, status = os.waitpid(pid, 0)
        child_backend, child_current = os.read(read, 100).decode().split()
        os.close(read)
        assert os.waitstatus_to_exitcode(status) == 0
        # A session of its own: none of the parent's, in use or idle in its pool.
        assert child_current == "v1" and int(child_backend) not in existing
        # The child neither used nor closed the parent's connection.
        assert held.execute("SELECT 1").fetchone() == (1,)
    assert store.current() == "v1"


def test_a_wrong_password_fails_at_once_with_the_reason(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = DatabaseRef.from_url(pg_url).user
    wrong = pg_url.replace(f"{user}:", f"{user}:not-the-password", 1)
    assert wrong != pg_url
    layout = Layout(tmp_path / "other")
    bind_database(layout, wrong)
    monkeypatch.setenv("TOWERFLOW_DATABASE_URL", wrong)
    with pytest.raises(DatabaseUnavailableError, match="password authentication failed"):
        VersionStore(layout).current()

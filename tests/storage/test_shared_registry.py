"""A store bound to PostgreSQL (storage.database, storage.pg_registry, storage.backends)
against a real server on loopback: the binding and its credentials, clear errors,
locks and compare-and-swap across processes, and SIGKILL during publish.

The publish protocol's own tests (test_versions.py, test_crash_safety.py) run on both
registries; this file covers what only a shared backend has."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from storage import Layout, VersionStore
from storage.backends import StoreLockTimeout, open_registry, store_lock
from storage.database import (
    DatabaseError,
    DatabaseRef,
    DatabaseUnavailableError,
    bind_database,
    read_binding,
)
from storage.pg_registry import PgRegistry
from storage.publishing import PUBLISH_STEPS
from tests.storage.publisher import publish_staged, stage_version

REPO = Path(__file__).resolve().parents[2]


def _child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.storage.shared_publisher", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


# -- the binding ------------------------------------------------------------------------


def test_a_url_is_parsed_and_shown_without_its_password() -> None:
    ref = DatabaseRef.from_url("postgresql://ann:p%40ss@db.example:6543/recs?sslmode=require")
    assert (ref.host, ref.port, ref.dbname, ref.user, ref.schema) == (
        "db.example", 6543, "recs", "ann", "towerflow",
    )  # fmt: skip
    assert ref.options == (("sslmode", "require"),)
    assert "p%40ss" not in ref.url and "p@ss" not in ref.url
    assert ref.url == "postgresql://ann@db.example:6543/recs?sslmode=require&schema=towerflow"
    assert DatabaseRef.from_url(ref.url) == ref


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://u@h/db", "must start with postgresql://"),
        ("postgresql://h/db", "must name a user, a host and a database"),
        ("postgresql://u:secret@h:99999/db", "invalid port"),
        ("postgresql://u@h/db?schema=Bad-Name", "lower-case SQL identifier"),
        ("postgresql://u@h/db?password=secret", "password in the URL's user part"),
    ],
)
def test_a_bad_url_is_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as err:
        DatabaseRef.from_url(url)
    assert "secret" not in str(err.value)


def test_binding_writes_no_password_and_other_processes_follow_it(
    pg_url: str, tmp_path: Path
) -> None:
    layout = Layout(tmp_path / "store")
    bind_database(layout, pg_url)
    password = urlsplit(pg_url).password
    assert password and password not in layout.database_binding.read_text()
    store = VersionStore(layout)
    publish_staged(store, stage_version(store, "v1"), None)
    assert not layout.registry_db.exists()  # the registry is on the server

    read = "from storage import Layout, VersionStore; print(VersionStore(Layout('%s')).current())"
    env = {k: v for k, v in os.environ.items() if k != "TOWERFLOW_DATABASE_URL"}
    # A process that does not have the credentials fails with the server named, never the
    # password, instead of writing a private registry.sqlite beside the shared one.
    no_creds = subprocess.run(
        [sys.executable, "-c", read % layout.root], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert no_creds.returncode != 0
    assert "DatabaseUnavailableError: cannot connect to the store's database" in no_creds.stderr
    assert read_binding(layout).url in no_creds.stderr  # type: ignore[union-attr]
    assert password not in no_creds.stderr and not layout.registry_db.exists()
    # libpq's own variables work too.
    with_pgpassword = subprocess.run(
        [sys.executable, "-c", read % layout.root], cwd=REPO,
        env={**env, "PGPASSWORD": password}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert with_pgpassword.stdout.strip() == "v1", with_pgpassword.stderr


def test_binding_refuses_another_database_and_a_store_with_its_own_registry(
    pg_url: str, tmp_path: Path
) -> None:
    bound = Layout(tmp_path / "bound")
    assert bind_database(bound, pg_url) == bind_database(bound, pg_url)  # idempotent
    other = pg_url.replace("?schema=", "?schema=other_")
    with pytest.raises(DatabaseError, match=r"is bound to .* not .*other_"):
        bind_database(bound, other)

    local = Layout(tmp_path / "local")
    store = VersionStore(local)
    publish_staged(store, stage_version(store, "v1"), None)
    with pytest.raises(DatabaseError, match=r"keeps its registry in .*registry\.sqlite"):
        bind_database(local, pg_url)
    assert not local.database_binding.exists() and store.current() == "v1"

    bad = Layout(tmp_path / "bad")
    bad.root.mkdir()
    bad.database_binding.write_text('{"backend": "oracle"}')
    with pytest.raises(DatabaseError, match="invalid database binding: unknown database backend"):
        VersionStore(bad)


def test_an_unreachable_server_fails_fast_naming_it(tmp_path: Path) -> None:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    layout = Layout(tmp_path / "store")
    bind_database(layout, f"postgresql://u:pw@127.0.0.1:{port}/db")
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=f"127.0.0.1:{port}/db") as err:
        VersionStore(layout).current()
    assert isinstance(err.value, ConnectionError)  # tasks.retry retries it
    assert time.monotonic() - start < 10 and "pw" not in str(err.value).replace("pwd", "")


def test_reads_of_a_fresh_schema_create_nothing(pg_url: str, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "store")
    bind_database(layout, pg_url)
    registry = open_registry(layout)
    assert isinstance(registry, PgRegistry)
    assert registry.current() is None and registry.list_versions() == []
    assert registry.events() == [] and registry.get("v1") is None
    import psycopg

    with psycopg.connect(pg_url.split("?")[0]) as conn:
        found = conn.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
            (registry.ref.schema,),
        ).fetchone()
    assert found is None


# -- locks and races across processes ---------------------------------------------------


def test_a_store_lock_holds_across_processes_and_dies_with_its_holder(
    pg_url: str, tmp_path: Path
) -> None:
    layout = Layout(tmp_path / "store")
    bind_database(layout, pg_url)
    holder = _child("lock", str(layout.root), "nightly", "run-A on host-1")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        held = r"lock 'nightly': lock still held .* by run-A on host-1"
        with (
            pytest.raises(StoreLockTimeout, match=held) as err,
            store_lock(layout, "nightly", timeout_s=0.2, owner="run-B"),
        ):
            pass
        assert err.value.name == "nightly"
        with store_lock(layout, "publish", timeout_s=0):  # another lock: free
            pass
    finally:
        holder.kill()
        holder.wait()
    # The server drops a dead holder's lock with its connection.
    with store_lock(layout, "nightly", timeout_s=10, owner="run-B"):
        pass


def test_two_publisher_processes_race_one_wins_one_gets_the_conflict(
    pg_url: str, tmp_path: Path
) -> None:
    layout = Layout(tmp_path / "store")
    bind_database(layout, pg_url)
    store = VersionStore(layout)
    publish_staged(store, stage_version(store, "v0"), None)
    for round_ in range(5):
        (layout.root / "go").unlink(missing_ok=True)
        seeds = (1000 + 10 * round_, 1001 + 10 * round_)
        kids = [_child("publish", str(layout.root), str(seed), "1") for seed in seeds]
        for kid in kids:  # both read CURRENT, staged and wait on the start line
            assert kid.stdout is not None and kid.stdout.readline().strip() == "ready"
        (layout.root / "go").touch()
        results = []
        for kid in kids:
            out, err = kid.communicate(timeout=60)
            assert kid.returncode == 0, err
            results.append(out.splitlines()[-1].split())
        assert sorted(r[0] for r in results) == ["lost", "won"], results
        winner = next(vid for verdict, vid in results if verdict == "won")
        assert store.current() == winner
        store.verify(winner)
    # Each round's winner, and only the winners, moved CURRENT (keep_versions=3 pruned).
    actions = [e.action for e in store.registry.events()]
    assert actions.count("publish") == 6 and set(actions) == {"publish", "prune"}


def test_sigkill_during_publish_on_the_shared_backend_leaves_current_valid(
    pg_url: str, tmp_path: Path
) -> None:
    """30 publisher processes, each SIGKILLed a random 0-3 ms after it reports a publish
    step (cycling over every step): after each kill CURRENT names a complete, verified
    version, and the next publisher carries on."""
    layout = Layout(tmp_path / "store")
    bind_database(layout, pg_url)
    store = VersionStore(layout, keep_versions=3)
    publish_staged(store, stage_version(store, "v0"), None)
    rng = random.Random(7)
    landed: dict[str, int] = {}
    for kill in range(30):
        target = PUBLISH_STEPS[kill % len(PUBLISH_STEPS)]
        kid = _child("publish", str(layout.root), str(kill + 1), "50")
        assert kid.stdout is not None
        for line in kid.stdout:
            if line.strip() == f"step {target}":
                time.sleep(rng.uniform(0, 0.003))
                break
        kid.send_signal(signal.SIGKILL)
        kid.wait()
        assert kid.returncode == -signal.SIGKILL
        landed[target] = landed.get(target, 0) + 1
        current = store.current()
        assert current is not None
        store.verify(current)
        assert store.open_current().version_id == current
    assert set(landed) == set(PUBLISH_STEPS)
    # What the dead left goes with the next locked run; publishing still works.
    with store_lock(layout, "publish", timeout_s=10):
        store.collect_dead(publish_locked=True)
    publish_staged(store, stage_version(store, "after"), store.current())
    assert store.current() == "after"
    registered = {r.version_id for r in store.list_versions()}
    assert {p.name for p in layout.versions_dir.iterdir()} == registered
    assert json.loads(layout.database_binding.read_text())["backend"] == "postgresql"


def test_concurrent_appends_never_show_a_reader_an_uncommitted_gap(
    pg_url: str, tmp_path: Path
) -> None:
    """Four producers append at once while a reader polls: whatever head it sees, every
    entry up to it is there (so a version recording that head misses nothing)."""
    import threading

    import numpy as np

    from storage import ItemUpsert
    from storage.backends import open_catalogue

    layout = Layout(tmp_path / "store")
    bind_database(layout, pg_url)
    done = threading.Event()
    seen: list[tuple[int, int]] = []

    def produce(k: int) -> None:
        log = open_catalogue(layout)
        for n in range(40):
            item = 1_000 * k + n  # one new item per event: head == number of entries
            log.append_upserts(f"p{k}-{n}", [ItemUpsert(item, 1, np.full(2, n, np.float32))])

    def read() -> None:
        log = open_catalogue(layout)
        while not done.is_set():
            state = log.changes(0)
            seen.append((state.upto, len(state.upsert_id)))

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(4)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    done.set()
    reader.join()
    gaps = [(head, n) for head, n in seen if head != n]
    assert len(seen) > 10 and not gaps, gaps[:5]
    assert open_catalogue(layout).head() == 160

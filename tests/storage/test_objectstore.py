"""A store on object storage (storage.objectstore) against a local S3-compatible server
(moto) and a real PostgreSQL registry: publish uploads and reads back, a fresh cache
fetches verified copies, tampered or missing objects are refused, pruning and dead runs'
leftovers are cleaned on the remote, and SIGKILL during publish leaves CURRENT valid."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from core.store import resolve_root
from storage import CorruptVersionError, Layout, PublishConflictError, VersionFiles, VersionStore
from storage.backends import store_lock
from storage.database import bind_database
from storage.errors import StorageError
from storage.objectstore import RemoteError
from storage.publishing import PUBLISH_STEPS
from storage.remote_binding import bind_remote, cache_root, read_remote
from tests.storage.publisher import publish_staged, stage_version

REPO = Path(__file__).resolve().parents[2]


def _store(s3_root: str, pg_url: str, cache: str = "cache", keep: int = 5) -> VersionStore:
    """The store at ``s3_root`` as a machine with its own cache folder sees it."""
    layout = Layout(resolve_root(s3_root))
    if cache != "cache":  # another machine: another cache folder
        layout = Layout(layout.root.parent.parent.parent.parent / cache / layout.root.name)
        bind_remote(layout, s3_root)
    bind_database(layout, pg_url)
    return VersionStore(layout, keep_versions=keep)


def _objects(s3_root: str) -> set[str]:
    fs, base = pafs.FileSystem.from_uri(s3_root)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return {i.path[len(base) + 1 :] for i in infos if i.type == pafs.FileType.File}


def _flip(s3_root: str, key: str) -> None:
    fs, base = pafs.FileSystem.from_uri(s3_root)
    with fs.open_input_stream(f"{base}/{key}") as f:
        data = bytearray(f.read())
    data[len(data) // 2] ^= 0x01
    with fs.open_output_stream(f"{base}/{key}") as f:
        f.write(bytes(data))


def test_the_root_url_maps_to_a_cache_bound_to_it(s3_root: str, tmp_path: Path) -> None:
    cache = resolve_root(s3_root)
    assert cache == cache_root(s3_root, tmp_path / "cache")
    assert cache.is_relative_to(tmp_path / "cache") and cache.name == "store"
    remote = read_remote(Layout(cache))
    assert remote is not None and remote.url == s3_root
    with pytest.raises(RemoteError, match="caches s3://"):
        bind_remote(Layout(cache), s3_root.replace("/store", "/other"))
    with pytest.raises(ValueError, match="credentials in the environment"):
        bind_remote(Layout(tmp_path / "x"), "s3://key:secret@bucket/p")
    # An object-store root without a shared registry is refused, naming the fix.
    with pytest.raises(StorageError, match="set TOWERFLOW_DATABASE_URL"):
        VersionStore(Layout(cache))


def test_publish_uploads_and_a_fresh_cache_fetches_verified_copies(
    s3_root: str, pg_url: str
) -> None:
    store = _store(s3_root, pg_url)
    v1 = stage_version(store, "v1")
    publish_staged(store, v1, None)
    files = {f"versions/v1/{n}" for n in store.open_current().manifest.files}
    assert files | {"versions/v1/manifest.json"} <= _objects(s3_root)

    other = _store(s3_root, pg_url, cache="cache-b")  # another machine
    assert not other.layout.version_dir("v1").exists()
    opened = other.open_current()  # fetched, verified, then renamed into the cache
    assert opened.version_id == "v1" and opened.path == other.layout.version_dir("v1")
    assert (opened.path / VersionFiles.INDEX).read_bytes() == (
        store.layout.version_dir("v1") / VersionFiles.INDEX
    ).read_bytes()
    assert not any(other.layout.fetch_dir.iterdir())


@pytest.mark.parametrize("damage", ["flip-index", "flip-manifest", "delete-index"])
def test_a_damaged_remote_copy_never_enters_a_cache(s3_root: str, pg_url: str, damage: str) -> None:
    store = _store(s3_root, pg_url)
    publish_staged(store, stage_version(store, "v1"), None)
    fs, base = pafs.FileSystem.from_uri(s3_root)
    if damage == "flip-index":
        _flip(s3_root, "versions/v1/index.faiss")
    elif damage == "flip-manifest":
        _flip(s3_root, "versions/v1/manifest.json")
    else:
        fs.delete_file(f"{base}/versions/v1/index.faiss")
    other = _store(s3_root, pg_url, cache="cache-b")
    reason = {"flip-index": "index.faiss", "flip-manifest": "manifest", "delete-index": "missing"}
    with pytest.raises(CorruptVersionError, match=reason[damage]):
        other.open_current()
    assert not other.layout.version_dir("v1").exists()
    assert not any(other.layout.fetch_dir.iterdir())
    assert store.open_current().version_id == "v1"  # the publisher's own cache is intact


def test_an_unreachable_object_store_fails_the_publish_and_registers_nothing(
    s3_root: str, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(s3_root, pg_url)
    publish_staged(store, stage_version(store, "v1"), None)
    vid = stage_version(store, "v2")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(RemoteError, match="uploading v2 to s3://"):
        publish_staged(store, vid, "v1")
    assert store.current() == "v1" and store.registry.get("v2") is None
    assert not store.layout.version_dir("v2").exists()


def test_pruned_and_dead_versions_leave_the_remote(s3_root: str, pg_url: str) -> None:
    store = _store(s3_root, pg_url, keep=1)
    publish_staged(store, stage_version(store, "v1"), None)
    publish_staged(store, stage_version(store, "v2"), "v1")
    assert not any(k.startswith("versions/v1/") for k in _objects(s3_root))
    # A dead publisher's upload that never committed: removed under the publish lock.
    store.remote.upload_version(  # type: ignore[union-attr]
        "v2",
        store.layout.version_dir("v2"),
        store.registry.get("v2").manifest_sha256,  # type: ignore[union-attr]
    )
    fs, base = pafs.FileSystem.from_uri(s3_root)
    fs.copy_file(f"{base}/versions/v2/manifest.json", f"{base}/versions/ghost/manifest.json")
    with store_lock(store.layout, "publish", timeout_s=10):
        store.collect_dead(publish_locked=True)
    assert {k.split("/")[1] for k in _objects(s3_root) if k.startswith("versions/")} == {"v2"}


def test_sigkill_at_every_publish_step_on_object_storage(s3_root: str, pg_url: str) -> None:
    store = _store(s3_root, pg_url)
    publish_staged(store, stage_version(store, "v0"), None)
    for n, kill_at in enumerate(("writing", *PUBLISH_STEPS)):
        vid = f"k{n}"
        child = subprocess.run(
            [sys.executable, "-m", "tests.storage.publisher", str(store.layout.root), vid, kill_at],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert child.returncode == -signal.SIGKILL, child.stderr
        current = store.current()
        assert current is not None
        store.verify(current)
        # Another machine's empty cache gets CURRENT, verified, from the object store.
        fresh = _store(s3_root, pg_url, cache=f"cache-{n}")
        assert fresh.open_current().version_id == current
    with store_lock(store.layout, "publish", timeout_s=10):
        store.collect_dead(publish_locked=True)
    registered = {r.version_id for r in store.list_versions()}
    remote = {k.split("/")[1] for k in _objects(s3_root) if k.startswith("versions/")}
    assert remote == registered


def test_the_loser_of_a_race_leaves_nothing_on_the_remote(s3_root: str, pg_url: str) -> None:
    store = _store(s3_root, pg_url)
    publish_staged(store, stage_version(store, "v1"), None)
    a, b = stage_version(store, "a", seed=1), stage_version(store, "b", seed=2)
    publish_staged(store, a, "v1")
    with pytest.raises(PublishConflictError):
        publish_staged(store, b, "v1")
    remote = {k.split("/")[1] for k in _objects(s3_root) if k.startswith("versions/")}
    assert remote == {"v1", "a"} and store.current() == "a"


def test_snapshots_are_shared_through_the_remote_and_verified(s3_root: str, pg_url: str) -> None:
    from storage import SnapshotNotFoundError, begin_snapshot, commit_snapshot, snapshot_path
    from storage.snapshots import snapshot_exists

    store = _store(s3_root, pg_url)
    staging = begin_snapshot(store.layout, "snap-1")
    (staging / "interactions.parquet").write_bytes(b"x" * 100_000)
    (staging / "snapshot.json").write_text('{"id": "snap-1"}')
    commit_snapshot(store.layout, "snap-1", staging)
    keys = _objects(s3_root)
    assert {"data/snap-1/interactions.parquet", "data/snap-1/snapshot.json"} <= keys
    assert "data/snap-1/files.sha256.json" in keys

    other = _store(s3_root, pg_url, cache="cache-b")  # another machine
    assert snapshot_exists(other.layout, "snap-1")  # fetched, verified
    got = snapshot_path(other.layout, "snap-1")
    assert (got / "interactions.parquet").read_bytes() == b"x" * 100_000
    assert not snapshot_exists(other.layout, "snap-2")
    with pytest.raises(SnapshotNotFoundError, match="snap-2"):
        snapshot_path(other.layout, "snap-2")

    _flip(s3_root, "data/snap-1/interactions.parquet")
    third = _store(s3_root, pg_url, cache="cache-c")
    with pytest.raises(StorageError, match="does not match its checksum"):
        snapshot_path(third.layout, "snap-1")
    assert not third.layout.snapshot_dir("snap-1").exists()
    assert not any(third.layout.staging_snapshots_dir.iterdir())


def test_an_items_file_sent_on_one_machine_is_read_verified_on_another(
    s3_root: str, pg_url: str, tmp_path: Path
) -> None:
    import json

    from core.events import event_payload
    from core.items import _validate
    from core.items_validation import ItemsBatch

    sender = _store(s3_root, pg_url)
    ids = list(range(1, 602))  # above the inline limit: the file goes through the inbox
    file = tmp_path / "retire.json"
    file.write_text(json.dumps(ids))
    payload = event_payload(sender.layout.root, "ev-1", file, ids)
    name = payload["path"]
    assert "/" not in name and name.startswith("ev-1-") and name.endswith(".json")
    assert f"inbox/{name}" in _objects(s3_root)

    worker = _store(s3_root, pg_url, cache="cache-b")  # the machine that runs the event
    batch = ItemsBatch(event_id="ev-1", operation="retire", path=name)
    assert list(_validate(worker.layout.root, batch).retire_ids) == ids
    assert (worker.layout.inbox_dir / name).read_bytes() == file.read_bytes()

    _flip(s3_root, f"inbox/{name}")
    third = _store(s3_root, pg_url, cache="cache-c")
    with pytest.raises(StorageError, match="does not match its checksum"):
        _validate(third.layout.root, batch)
    assert not (third.layout.inbox_dir / name).exists()


def test_check_on_a_fresh_cache_fetches_first_and_names_a_damaged_object(
    s3_root: str, pg_url: str
) -> None:
    store = _store(s3_root, pg_url)
    publish_staged(store, stage_version(store, "v1"), None)
    assert _store(s3_root, pg_url, cache="cache-b").check("v1").intact
    _flip(s3_root, "versions/v1/index.faiss")
    (problem,) = _store(s3_root, pg_url, cache="cache-c").check("v1").problems
    assert problem.name == "index.faiss" and problem.status == "unreadable"


def test_reports_are_shared_whole_and_an_unreachable_store_is_named(
    s3_root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = bind_remote(Layout(tmp_path / "cache"), s3_root)
    report = tmp_path / "v1.html"
    report.write_bytes(b"<html>first</html>")
    url = remote.upload_report(report)
    assert url == f"{s3_root.split('?')[0]}/reports/v1.html"
    report.write_bytes(b"<html>second, longer</html>")  # rewritten: the object is replaced
    remote.upload_report(report)
    fs, base = pafs.FileSystem.from_uri(s3_root)
    with fs.open_input_stream(f"{base}/reports/v1.html") as f:
        assert f.read() == b"<html>second, longer</html>"
    with pytest.raises(ValueError, match="report file"):
        remote.upload_report(tmp_path / "..html")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(RemoteError, match=r"uploading v1\.html to s3://"):
        remote.upload_report(report)

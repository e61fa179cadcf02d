"""A store whose registry and item catalogue live in PostgreSQL (TOWERFLOW_DATABASE_URL):
the tiny nightly, an items event and the recall API, through the Python API, against a
real server on loopback. Nothing of the registry or the catalogue lands in the root."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from bench.http_server import serve_in_thread
from core.config import NightlyConfig
from core.items import apply_items
from core.items_validation import ItemsBatch
from core.lifecycle import OverlappingRunError, exclusive_nightly
from core.nightly import run_nightly
from service import ApiSettings, RecallService, create_app
from storage import Layout, VersionStore, read_json
from storage.database import DatabaseRef, read_binding

pytestmark = pytest.mark.e2e


def test_nightly_items_event_and_api_on_a_postgresql_registry(pg_url: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    cfg = NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 2},
            "evaluation": {"baseline": "none", "gate_min_lift": 0.0},
            "runtime": {"storage_root": str(root), "resume": False, "threads": 2},
        }
    )
    first = run_nightly(cfg)
    layout = Layout(root)
    ref = read_binding(layout)
    assert ref is not None and ref.same_database(DatabaseRef.from_url(pg_url))
    store = VersionStore(layout)
    assert store.current() == first

    # An items event: recorded in the shared catalogue, published as a new CURRENT.
    dim = read_json(store.open_current().path / "model.json")["content_dim"]
    rng = np.random.default_rng(3)
    new_ids = [900_001, 900_002]
    items = [
        {"item_id": i, "category": 1, "content": rng.normal(size=dim).round(4).tolist()}
        for i in new_ids
    ]
    recorded, second = apply_items(str(root), ItemsBatch(event_id="e-1", items=items))
    assert recorded.accepted == 2 and second != first and store.current() == second
    again, same = apply_items(str(root), ItemsBatch(event_id="e-1", items=items))
    assert again.duplicate and same == second  # redelivered: a no-op

    # The registry and the catalogue are on the server, not in the root.
    assert not layout.registry_db.exists() and not layout.catalogue_db.exists()
    with psycopg.connect(pg_url.split("?")[0]) as conn:
        s = ref.schema
        current = conn.execute(f'SELECT version_id FROM "{s}".current').fetchone()
        entries = conn.execute(f'SELECT COUNT(*) FROM "{s}".catalogue_entries').fetchone()
    assert current == (second,) and entries == (2,)

    # The API serves CURRENT from the shared registry, new items included.
    service = RecallService(VersionStore(layout), poll_interval_s=0.1)
    with (
        serve_in_thread(create_app(service, ApiSettings())) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        health = client.get("/v1/health").json()
        assert health["version"] == health["current_in_store"] == second, health
        body = client.post("/v1/recall", json={"user_id": 1, "k": 10})
        assert body.status_code == 200 and body.json()["version"] == second

    # The nightly lock is the database's: held here, a second run is refused at once.
    with (
        exclusive_nightly(str(root), "run-A"),
        pytest.raises(OverlappingRunError, match=r"another nightly run is in progress.*run-A"),
        exclusive_nightly(str(root), "run-B"),
    ):
        pass


def test_nightly_items_event_and_api_on_an_s3_root(
    s3_root: str, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole life cycle with ``runtime.storage_root: s3://...``: versions on the
    object store, registry and catalogue in PostgreSQL, and an API on another machine
    (another cache folder) that serves CURRENT from verified downloads."""
    import pyarrow.fs as pafs

    from core.store import open_store

    cfg = NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 2},
            "evaluation": {"baseline": "none", "gate_min_lift": 0.0},
            "runtime": {"storage_root": s3_root, "resume": False, "threads": 2},
        }
    )
    first = run_nightly(cfg)
    store = open_store(s3_root)
    assert store.remote is not None and store.current() == first
    dim = read_json(store.open_current().path / "model.json")["content_dim"]
    items = [{"item_id": 900_001, "category": 1, "content": [0.1] * dim}]
    recorded, second = apply_items(str(store.layout.root), ItemsBatch(event_id="e-s3", items=items))
    assert recorded.accepted == 1 and store.current() == second != first

    fs, base = pafs.FileSystem.from_uri(s3_root)
    found = fs.get_file_info(pafs.FileSelector(f"{base}/versions", recursive=True))
    on_s3 = {i.path.split("/")[-2] for i in found if i.path.endswith("/manifest.json")}
    assert {first, second} <= on_s3

    # Another machine: an empty cache; the API fetches CURRENT and verifies it first.
    monkeypatch.setenv("TOWERFLOW_CACHE_DIR", str(tmp_path / "replica-cache"))
    replica = open_store(s3_root)
    assert replica.layout.root.is_relative_to(tmp_path / "replica-cache")
    assert not replica.layout.version_dir(second).exists()
    service = RecallService(replica, poll_interval_s=0.1)
    with (
        serve_in_thread(create_app(service, ApiSettings())) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        health = client.get("/v1/health").json()
        assert health["version"] == second, health
        body = client.post("/v1/recall", json={"user_id": 1, "k": 10})
        assert body.status_code == 200 and body.json()["version"] == second
    assert replica.layout.version_dir(second).is_dir()
    # The nightly's data snapshot is on the object store too: another machine's nightly
    # finds it there (fetched, verified) instead of drawing it again.
    from storage.snapshots import snapshot_exists

    snap = replica.open_current().manifest.lineage.data_snapshot
    assert snap and not replica.layout.snapshot_dir(snap).exists()
    assert snapshot_exists(replica.layout, snap) and replica.layout.snapshot_dir(snap).is_dir()
    # A report is written from the fetched, verified version on any machine, and shared
    # on the object store, read back before it counts.
    from core.reports import write_version_report

    report, _ = write_version_report(replica.layout.root, first)
    assert report.path.is_file() and first in report.path.read_text()
    assert replica.layout.version_dir(first).is_dir()  # fetched for it
    assert report.shared == f"{s3_root.split('?')[0]}/reports/{first}.html"
    with fs.open_input_stream(f"{base}/reports/{first}.html") as shared:
        assert shared.read() == report.path.read_bytes()

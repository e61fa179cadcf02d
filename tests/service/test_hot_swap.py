"""Hot swap under load: versions are published (some corrupt) while clients hammer the
API; no request fails, only valid versions answer, the last valid one wins, and health
says why the others were rejected."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from core.recall import Recaller
from service import ApiSettings, RecallService, create_app
from storage import Layout, VersionStore
from tests.conftest import Published
from tests.service.conftest import serve
from tests.service.versions import Variant, publish_variant

PLAN: list[Variant] = ["ok", "ok", "checksum", "ok", "count", "ok", "dim", "ok", "ok", "ok"]
REASONS = {"checksum": "sha256", "count": "index ntotal 590 != 600 items", "dim": "index dim 32"}


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.prefect
def test_versions_swap_under_load_and_bad_ones_are_never_served(
    published: Published, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    shutil.copytree(published.root, root)
    # Keep every version: pruning one mid-load is not what this test is about.
    store = VersionStore(Layout(root), keep_versions=50)
    base = store.layout.version_dir(published.version_id)
    service = RecallService(store, poll_interval_s=0.05)
    results: list[tuple[int, str | None]] = []
    failures: list[str] = []
    stop = threading.Event()

    def client(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            i = offset
            while not stop.is_set():
                body = {"user_id": 1 + i % 400, "k": 20, "exclude_categories": [i % 8]}
                i += 1
                try:
                    r = c.post("/v1/recall", json=body)
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                    continue
                version = r.json().get("version") if r.status_code == 200 else None
                results.append((r.status_code, version))
                if r.status_code != 200 or len(r.json()["items"]) != 20:
                    failures.append(f"{r.status_code}: {r.text[:200]}")

    valid, bad = [published.version_id], {}
    with serve(create_app(service, ApiSettings())) as url:
        clients = [threading.Thread(target=client, args=(n * 1000,)) for n in range(3)]
        for t in clients:
            t.start()
        try:
            for seed, variant in enumerate(PLAN):
                before = len(results)
                vid = publish_variant(store, base, variant, seed)
                if variant == "ok":
                    valid.append(vid)
                    _wait_for(lambda v=vid: service.recaller.version_id == v, f"{vid} served")
                else:
                    bad[vid] = variant
                    _wait_for(
                        lambda v=vid: any(r.version_id == v for r in service.status.rejected),
                        f"{vid} rejected",
                    )
                # Let requests run against this state before the next publish.
                _wait_for(lambda b=before: len(results) > b + 20, "requests")
        finally:
            stop.set()
            for t in clients:
                t.join(30)
        health = httpx.get(f"{url}/v1/health").json()

    assert failures == []
    assert len(results) > 200
    served = {v for _, v in results}
    assert served <= set(valid) and not served & set(bad)
    assert len(served) >= 5  # most valid versions answered some requests
    assert health["status"] == "ok" and health["version"] == valid[-1]
    assert health["current_in_store"] == valid[-1]
    assert health["rejected_versions"] == list(bad)
    assert health["last_rejection"]["version"] == list(bad)[-1]
    assert REASONS["dim"] in health["last_rejection"]["reason"]
    for rejection in service.status.rejected:
        assert REASONS[bad[rejection.version_id]] in rejection.reason
    assert health["swaps"] == len(valid)  # the start plus every valid publish


@pytest.mark.prefect
def test_a_rejected_version_is_loaded_once_and_never_again(
    published: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "store"
    shutil.copytree(published.root, root)
    store = VersionStore(Layout(root))
    service = RecallService(store)
    assert service.refresh()
    bad = publish_variant(store, store.layout.version_dir(published.version_id), "count", 0)
    loads: list[str | None] = []
    real_load = Recaller.load

    def counting_load(s: VersionStore, version_id: str | None = None) -> Recaller:
        loads.append(version_id)
        return real_load(s, version_id)

    monkeypatch.setattr(Recaller, "load", staticmethod(counting_load))
    assert [service.refresh() for _ in range(5)] == [False] * 5
    assert loads == [bad]
    recaller = service.recaller
    assert recaller is not None and recaller.version_id == published.version_id
    assert service.status.current_in_store == bad and service.status.polls == 6


@pytest.mark.prefect
def test_a_service_started_before_the_first_publish_picks_it_up(
    published: Published, tmp_path: Path
) -> None:
    store = VersionStore(Layout(tmp_path / "empty"))
    service = RecallService(store, poll_interval_s=0.05)
    with serve(create_app(service)) as url, httpx.Client(base_url=url) as c:
        assert c.post("/v1/recall", json={"user_id": 1}).status_code == 503
        base = Layout(published.root).version_dir(published.version_id)
        vid = publish_variant(store, base, "ok", 0)
        _wait_for(lambda: c.get("/v1/health").status_code == 200, "the first version")
        answer = c.post("/v1/recall", json={"user_id": 1})
        assert answer.status_code == 200 and answer.json()["version"] == vid

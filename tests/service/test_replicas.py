"""API replicas on a shared store: two `towerflow api` processes serve one store whose
registry is in PostgreSQL, under load, while 10 versions are published (3 broken), on a
shared folder and on an object-store root (each replica with its own verified cache).
No request fails, none is answered by a broken version, and both replicas end on the last
valid one, each after verifying it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from core.config import NightlyConfig
from core.nightly import run_nightly
from core.store import resolve_root
from storage import Layout, VersionStore
from tests.service.versions import Variant, publish_variant

pytestmark = pytest.mark.e2e

PLAN: list[Variant] = ["ok", "checksum", "ok", "ok", "count", "ok", "dim", "ok", "ok", "ok"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _health(url: str) -> dict[str, object]:
    try:
        r = httpx.get(f"{url}/v1/health", timeout=5)
    except httpx.HTTPError:
        return {}
    return dict(r.json()) if r.status_code in (200, 503) else {}


@pytest.fixture(params=["shared-disk", "s3"])
def replicas(
    request: pytest.FixtureRequest, pg_url: str, tmp_path: Path
) -> Iterator[tuple[VersionStore, list[str]]]:
    """A PostgreSQL-bound store with one tiny nightly published, and two API processes
    on it (polling CURRENT every 0.1 s); yields the publisher's store and their URLs.
    ``shared-disk``: one root folder for all; ``s3``: an object-store root, each replica
    with a cache folder of its own (another machine), fetching and verifying versions."""
    root: str = str(tmp_path / "store")
    if request.param == "s3":
        root = request.getfixturevalue("s3_root")
    cfg = NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": 1},
            "evaluation": {"baseline": "none", "gate_min_lift": -1.0},
            "runtime": {"storage_root": root, "resume": False},
        }
    )
    run_nightly(cfg)
    urls, procs, logs = [], [], []
    try:
        for n in range(2):
            port = _port()
            env = dict(os.environ)
            logs.append(open(tmp_path / f"replica-{n}.log", "wb"))  # noqa: SIM115
            if request.param == "s3":
                env["TOWERFLOW_CACHE_DIR"] = str(tmp_path / f"replica-{n}")
            procs.append(
                subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("towerflow")), "api",
                        "--root", root, "--port", str(port), "--poll-interval", "0.1",
                        "--log-level", "warning",
                    ],
                    env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=logs[-1],
                )
            )  # fmt: skip
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            _wait_for(lambda u=url: _health(u).get("status") == "ok", f"{url} up", 120)
        yield VersionStore(Layout(resolve_root(root)), keep_versions=50), urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for f in logs:
            f.close()


def test_two_replicas_swap_under_load_with_no_failed_request(
    replicas: tuple[VersionStore, list[str]],
) -> None:
    store, urls = replicas
    base = store.layout.version_dir(store.current() or "")
    results: list[tuple[int, int, str | None]] = []  # (replica, status, version)
    failures: list[str] = []
    stop = threading.Event()

    def client(replica: int, offset: int) -> None:
        with httpx.Client(base_url=urls[replica], timeout=30) as c:
            i = offset
            while not stop.is_set():
                i += 1
                try:
                    r = c.post("/v1/recall", json={"user_id": 1 + i % 300, "k": 10})
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                    continue
                version = r.json().get("version") if r.status_code == 200 else None
                results.append((replica, r.status_code, version))
                if r.status_code != 200:
                    failures.append(f"replica {replica}: {r.status_code} {r.text[:200]}")

    valid, bad = [store.current()], []
    clients = [threading.Thread(target=client, args=(n % 2, n * 1000)) for n in range(4)]
    for t in clients:
        t.start()
    try:
        for seed, variant in enumerate(PLAN):
            before = len(results)
            vid = publish_variant(store, base, variant, seed)
            (valid if variant == "ok" else bad).append(vid)
            # Both replicas saw this CURRENT (served it, or rejected it) before the next.
            for url in urls:
                _wait_for(
                    lambda u=url, v=vid: _health(u).get("current_in_store") == v,
                    f"{url} polled {vid}",
                )
            _wait_for(lambda b=before: len(results) > b + 20, "requests")
    finally:
        stop.set()
        for t in clients:
            t.join(30)

    assert failures == []
    assert len(results) > 200 and {r for r, _, _ in results} == {0, 1}
    served = {v for _, _, v in results}
    assert served <= set(valid) and not served & set(bad)
    for url in urls:
        _wait_for(lambda u=url: _health(u).get("version") == valid[-1], f"{url} on the last")
        health = _health(url)
        assert health["status"] == "ok" and health["current_in_store"] == valid[-1]
        assert health["rejected_versions"] == bad  # each replica verified each version

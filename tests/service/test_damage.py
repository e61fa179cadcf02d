"""A version whose bytes change on disk while the service loads it (after its checksums
were read) is rejected like one that fails them: the service keeps the version it had,
or answers 503, never 200 from the damaged one. The corruption matrix
(``bench.corruption``) covers damage present before a load."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

import core.recall
from service import RecallService, create_app
from storage import Layout, VersionFiles, VersionStore
from tests.core.items.conftest import publish_mini_version
from tests.service.conftest import serve


def _flip_middle_byte(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(path.stat().st_size // 2)
        old = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([old ^ 0xFF]))


def _age(folder: Path) -> None:
    """Date the version's files a minute back, as for a version published a while ago
    (an in-place write within the same clock tick as the file's last one keeps its
    mtime)."""
    for p in folder.iterdir():
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 60 * 10**9))


@pytest.mark.parametrize("serving", [False, True], ids=["at-start", "hot-swap"])
@pytest.mark.parametrize("name", [VersionFiles.INDEX, VersionFiles.MODEL_WEIGHTS])
def test_bytes_damaged_while_loading_are_never_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serving: bool, name: str
) -> None:
    root = tmp_path / "store"
    store = publish_mini_version(root)
    first = store.current()
    service = RecallService(VersionStore(Layout(root)), poll_interval_s=3600)
    if serving:
        assert service.refresh()
        publish_mini_version(root, seed=1)
    target = store.current()
    assert target is not None
    folder = store.layout.version_dir(target)
    _age(folder)
    real_load = core.recall.load_served_model

    def damage_then_load(path: Path) -> object:
        # After the checksums were read, before any file is loaded: the window between
        # verifying a version and reading its files.
        if path == folder:
            _flip_middle_byte(folder / name)
        return real_load(path)

    monkeypatch.setattr(core.recall, "load_served_model", damage_then_load)
    assert not service.refresh()
    rejection = service.status.last_rejection
    assert rejection is not None and rejection.version_id == target
    assert "CorruptVersionError" in rejection.reason and name in rejection.reason
    # The server's start polls once more: a rejected version is not loaded again.
    with serve(create_app(service)) as url, httpx.Client(base_url=url) as client:
        answer = client.post("/v1/recall", json={"user_id": 1, "k": 5})
        health = client.get("/v1/health").json()
    if serving:
        assert answer.status_code == 200 and answer.json()["version"] == first
    else:
        assert answer.status_code == 503
    assert health["last_rejection"]["version"] == target

"""Publishing again after losing the compare-and-swap, and the publish lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from storage import Layout, Lineage, PublishConflictError, VersionStore, file_lock
from tests.storage.publisher import DIM, N_ITEMS, publish_staged, stage_version


def test_loser_keeps_its_staging_and_publishes_on_the_winner(store: VersionStore) -> None:
    v1 = stage_version(store, seed=1)
    publish_staged(store, v1, None)
    slow, fast = stage_version(store, seed=2), stage_version(store, seed=3)
    publish_staged(store, fast, v1)

    def publish(expected: str | None) -> None:
        store.publish(
            slow,
            expected_current=expected,
            config={},
            lineage=Lineage(data_snapshot=None, parent_version=expected),
            embedding_dim=DIM,
            metric="inner_product",
            item_count=N_ITEMS,
            keep_staging_on_conflict=True,
        )

    with pytest.raises(PublishConflictError) as err:
        publish(v1)
    assert store.current() == fast and err.value.actual == fast
    assert store.staging_path(slow).is_dir()  # back in staging, not deleted
    assert not store.layout.version_dir(slow).exists()
    publish(err.value.actual)  # the retry on the newer state
    assert store.current() == slow
    assert store.open_version(slow).manifest.lineage.parent_version == fast


def test_file_lock_is_exclusive_and_times_out(tmp_path: Path) -> None:
    path, held, order = tmp_path / "x.lock", threading.Event(), []

    def holder() -> None:
        with file_lock(path):
            held.set()
            time.sleep(0.3)
            order.append("holder done")

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    with pytest.raises(TimeoutError, match="still held"), file_lock(path, timeout_s=0.05):
        pass
    with file_lock(path, timeout_s=5):
        order.append("second got it")
    t.join()
    assert order == ["holder done", "second got it"]
    assert Layout(tmp_path).publish_lock.name == "publish.lock"

"""Test helper: stage and publish a small version; run as a module, a child process that
publishes and SIGKILLs itself at a chosen step (see `test_crash_safety.py`).

Usage: python -m tests.storage.publisher ROOT VERSION_ID KILL_AT
KILL_AT is a step of `PUBLISH_STEPS`, or `writing` to die half-way through staging files.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from storage import (
    ITEM_EMBEDDINGS,
    Layout,
    Lineage,
    Manifest,
    VersionFiles,
    VersionStore,
    atomic_path,
    atomic_write_bytes,
    vectors_to_arrow,
    write_json,
    write_table,
)

DIM = 8
N_ITEMS = 16


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def stage_version(
    store: VersionStore, version_id: str | None = None, seed: int = 0, die_midway: bool = False
) -> str:
    """Begin a version and write the required files (opaque bytes stand in for weights
    and index: publish only checksums them). Returns the version id."""
    d = store.begin(version_id)
    vid = d.name
    rng = np.random.default_rng(seed)
    atomic_write_bytes(d / VersionFiles.MODEL_WEIGHTS, rng.bytes(4096))
    write_json(d / VersionFiles.MODEL_CONFIG, {"dim": DIM, "seed": seed})
    if die_midway:
        # Die inside an atomic write: a half-written temp file stays in staging.
        with atomic_path(d / VersionFiles.INDEX) as tmp, open(tmp, "wb") as f:
            f.write(rng.bytes(1024))
            f.flush()
            _die()
    atomic_write_bytes(d / VersionFiles.INDEX, rng.bytes(2048))
    emb = rng.standard_normal((N_ITEMS, DIM), dtype=np.float32)
    ids = pa.array(np.arange(N_ITEMS, dtype=np.int64) * 7 + 3)
    write_table(
        d / VersionFiles.ITEM_EMBEDDINGS,
        pa.table({"item_id": ids, "embedding": vectors_to_arrow(emb)}),
        ITEM_EMBEDDINGS,
    )
    return vid


def publish_staged(
    store: VersionStore,
    version_id: str,
    expected: str | None,
    hook: Callable[[str], None] | None = None,
) -> Manifest:
    """Publish a version staged by `stage_version` on top of `expected`."""
    return store.publish(
        version_id,
        expected_current=expected,
        config={"dim": DIM},
        lineage=Lineage(data_snapshot="snap-1", parent_version=expected),
        embedding_dim=DIM,
        metric="inner_product",
        item_count=N_ITEMS,
        metrics={"recall@10": 0.5},
        hook=hook,
    )


def main(root: str, version_id: str, kill_at: str) -> None:
    # keep_versions=1 so the "pruned" step really deletes the parent version.
    store = VersionStore(Layout(Path(root)), keep_versions=1)
    expected = store.current()
    vid = stage_version(store, version_id, seed=2, die_midway=kill_at == "writing")

    def hook(step: str) -> None:
        if step == kill_at:
            _die()

    publish_staged(store, vid, expected, hook=hook)
    sys.exit(3)  # reaching here means the kill step was never hit


if __name__ == "__main__":
    main(*sys.argv[1:4])

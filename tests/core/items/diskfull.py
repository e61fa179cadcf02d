"""Test helper, run as a child in a mount namespace whose store is a small tmpfs: fill
the disk to several levels, try an items event at each, check that nothing half-written
stays and CURRENT stays intact, then free the space and check the event goes through.

`python -m tests.core.items.diskfull ROOT` prints one JSON object per fill level.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

from core.deltas import resolve_chain, served_rows
from core.items import apply_items, record_items
from core.items_validation import ItemsBatch
from storage import Layout, VersionStore
from tests.core.items.conftest import item, publish_mini_version

# Free bytes left on the disk before each attempt: failures land at different writes
# (catalogue append, parquet tables, index, manifest, registry commit).
# "event": the whole event on a full disk (its catalogue append fails first); "publish":
# the event recorded with room to spare, then the publish on a full disk (tables, index,
# manifest, registry commit).
HEADROOMS = {
    "event": (0, 16384, 57344, 131072),
    "publish": (0, 32768, 49152, 65536, 81920, 98304, 131072, 262144),
}


def _fill(root: Path, leave: int) -> Path:
    filler = root.parent / "filler"
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
            f.flush()
            os.fsync(f.fileno())
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return filler


def _leftovers(layout: Layout) -> list[str]:
    found = []
    for parent in (layout.staging_versions_dir, layout.staging_snapshots_dir):
        if parent.is_dir():
            found += [p.name for p in parent.iterdir()]
    registered = {v.version_id for v in VersionStore(layout).list_versions()}
    if layout.versions_dir.is_dir():
        found += [p.name for p in layout.versions_dir.iterdir() if p.name not in registered]
    found += [p.name for p in layout.root.rglob("*") if ".tmp" in p.name]
    return found


def main(root: Path) -> None:
    store = publish_mini_version(root)
    layout = store.layout
    levels = [(mode, leave) for mode, leaves in HEADROOMS.items() for leave in leaves]
    for n, (mode, leave) in enumerate(levels):
        before = store.current()
        # Publish-mode events carry 500 items, so the delta's tables (about 60 KB) are
        # large enough for the tight levels to fail there, after the catalogue is read.
        size = 500 if mode == "publish" else 1
        items = [item(100_000 * (n + 1) + k) for k in range(size)]
        batch = ItemsBatch(event_id=f"full-{n}", operation="create", items=items)
        if mode == "publish":
            record_items(str(root), batch)
        filler = _fill(root, leave)
        try:
            apply_items(str(root), batch)
            outcome = "ok"
        except (OSError, sqlite3.Error) as e:
            outcome = f"{type(e).__name__}: {e}"[:160]
        current = store.current()
        assert current is not None
        store.verify(current)  # CURRENT intact whatever failed
        for v in store.list_versions():
            store.verify(v.version_id)
        left_full = _leftovers(layout)
        filler.unlink()
        # Space freed: the same event (a redelivery) goes through and is served once.
        apply_items(str(root), batch)
        served = resolve_chain(store, store.open_current())  # a delta: with its chain
        count = served_rows(served).item_id.tolist().count(100_000 * (n + 1))
        print(
            json.dumps(
                {
                    "mode": mode,
                    "leave": leave,
                    "outcome": outcome,
                    "moved": current != before,
                    "leftovers_when_full": left_full,
                    "leftovers_after": _leftovers(layout),
                    "served_once": count == 1,
                }
            ),
            flush=True,
        )
    shutil.rmtree(root)


if __name__ == "__main__":
    main(Path(sys.argv[1]))

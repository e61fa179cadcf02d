"""Sending an items event from outside the store's process: the payload (inline items, or
a copy of a large file in the store's inbox) and waiting until CURRENT includes it.
Light (no torch), so the CLI stays quick."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Final

from core.items_validation import MAX_INLINE_ITEMS
from storage import Layout, VersionStore, atomic_path
from storage.backends import open_catalogue
from storage.objectstore import inbox_name
from storage.remote_binding import read_remote

__all__ = ["MAX_INLINE_BYTES", "event_payload", "wait_until_published"]

# Under Prefect's 1.5 MB event limit with room for the envelope.
MAX_INLINE_BYTES: Final = 1_000_000


def event_payload(root: Path, event_id: str, file: Path | None, items: list[Any]) -> dict[str, Any]:
    """``{"items": [...]}`` when the batch is small, else ``{"path": ...}`` naming a copy
    of ``file`` in the store's inbox (written atomically, so the flow never reads half)."""
    inline = json.dumps(items, default=str)
    if file is None or (len(items) <= MAX_INLINE_ITEMS and len(inline) <= MAX_INLINE_BYTES):
        return {"items": items}
    layout = Layout(root)
    remote = read_remote(layout)
    if remote is not None:
        # An object-store root: the machine that runs the event fetches the file from the
        # remote inbox, by a name relative to the inbox that carries its checksum.
        target = layout.inbox_dir / inbox_name(event_id, file)
    else:
        target = layout.inbox_dir / f"{event_id}{file.suffix.lower()}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        shutil.copyfile(file, tmp)
    if remote is not None:
        remote.upload_inbox(target)
        return {"path": target.name}
    return {"path": str(target)}


def wait_until_published(root: Path, event_id: str, timeout_s: float) -> dict[str, Any]:
    """Poll until the event is acknowledged (in the catalogue) and CURRENT includes it;
    returns the seconds to each and CURRENT. ``TimeoutError`` says which did not happen."""
    layout = Layout(root)
    catalogue, store = open_catalogue(layout), VersionStore(layout)
    start = time.monotonic()
    acked_s: float | None = None
    while time.monotonic() - start < timeout_s:
        seq = catalogue.event_seq(event_id)
        if seq is not None:
            acked_s = acked_s or time.monotonic() - start
            current = store.current()
            if current is not None:
                lineage = store.open_version(current, verify=False).manifest.lineage
                if (lineage.catalogue_seq or 0) >= seq:
                    return {
                        "acknowledged_s": acked_s,
                        "published_s": time.monotonic() - start,
                        "version": current,
                    }
        time.sleep(0.05)
    raise TimeoutError(
        f"event {event_id} not {'published' if acked_s else 'acknowledged'} within "
        f"{timeout_s} s (is `towerflow serve` running against this server and store?)"
    )

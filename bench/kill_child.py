"""A child process of the kill loop (``bench.kill_loop``): one items event or one tiny
nightly against a store, reporting on stdout what the parent needs to judge a SIGKILL.

Usage::

    python -m bench.kill_child items ROOT EVENT_ID FIRST_ID N [SALT]
    python -m bench.kill_child nightly ROOT [EPOCHS [INDEX_FACTORY]]
    python -m bench.kill_child compact ROOT

Lines written (each flushed at once): ``READY`` once imports and reads are done (the
parent times its kill from there), ``ACK <event_id> <id,id,...>`` as soon as
``record_items`` returns (the items are acknowledged from then on), ``PUBLISH`` when the
publishing part begins (items: ``publish_catalogue``, a delta; nightly:
``publish_version``, the catch-up, checksums, fsync, rename, compare-and-swap and
pruning; compact: the part under the publish lock, after the fold), ``DONE <version>
<seconds since READY> <seconds since PUBLISH>`` at the end. An items event is
``apply_items`` split in two: record (acknowledge), then publish CURRENT + the
catalogue entries it lacks.

Each operation imports only what it runs, and the process leaves with ``os._exit`` once
its work is done and reported: torch's interpreter teardown (about 1 s on 2 cores) would
otherwise be most of an items event's cost in the loop.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from core.config import NightlyConfig
from storage import VERSION_ITEMS, Layout, VersionFiles, VersionStore, read_json, read_table

__all__ = ["event_items", "main", "nightly_config"]


def nightly_config(root: Path, epochs: int = 1, factory: str = "auto") -> NightlyConfig:
    """The tiny nightly the loop runs: one epoch, no quality gate or baseline, few tuning
    queries (about 2 s of work on 2 cores), default retention so pruning runs too;
    ``factory`` the index (e.g. HNSW16, whose updates go through the overlay)."""
    return NightlyConfig.model_validate(
        {
            "data": {"scale": "tiny"},
            "train": {"epochs": epochs},
            "evaluation": {"gate_min_lift": -1.0, "baseline": "none", "max_users": 100},
            "index": {"tune_queries": 20, "factory": factory},
            "runtime": {"storage_root": str(root)},
        }
    )


def event_items(root: Path, first_id: int, n: int, salt: int = 0) -> list[dict[str, Any]]:
    """Items ``first_id .. first_id + n - 1`` with content of CURRENT's model size; the
    same arguments give the same items (a redelivered event is identical), another
    ``salt`` new content for the same IDs (an update)."""
    from core.deltas import resolve_chain
    from model.config import TowerSpec

    store = VersionStore(Layout(root))
    base = resolve_chain(store, store.open_current(verify=False)).base  # a delta: its base's
    spec = TowerSpec.model_validate(read_json(base.file(VersionFiles.MODEL_CONFIG)))
    rng = np.random.default_rng([first_id, salt])
    return [
        {
            "item_id": first_id + j,
            "category": int(rng.integers(spec.n_categories)),
            "content": [float(v) for v in rng.normal(size=spec.content_dim)],
        }
        for j in range(n)
    ]


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _items(root: Path, event_id: str, first_id: int, n: int, salt: int) -> None:
    from core.deltas import resolve_chain
    from core.items import publish_catalogue, record_items
    from core.items_validation import ItemsBatch

    batch = ItemsBatch(event_id=event_id, items=event_items(root, first_id, n, salt))
    # Warm what the first record would otherwise load lazily (pyarrow's to_numpy of a
    # chunked column imports pandas: 0.6 s), so the timed part is the event itself.
    store = VersionStore(Layout(root))
    base = resolve_chain(store, store.open_current(verify=False)).base
    read_table(base.file(VersionFiles.ITEMS), VERSION_ITEMS, ["item_id"])["item_id"].to_numpy()
    _say("READY")
    start = time.monotonic()
    record_items(str(root), batch)
    _say(f"ACK {event_id} " + ",".join(str(first_id + j) for j in range(n)))
    published = _publishing()
    version = publish_catalogue(str(root))
    _done(version, start, published)


def _nightly(root: Path, epochs: int, factory: str) -> None:
    import core.nightly

    publish_version = core.nightly.publish_version
    published = [0.0]

    def announced(*args: Any, **kwargs: Any) -> str:
        published[0] = _publishing()
        return publish_version(*args, **kwargs)

    # run_nightly calls the name it imported: announce the step there, change nothing else.
    core.nightly.publish_version = announced  # type: ignore[assignment]
    config = nightly_config(root, epochs, factory)
    _say("READY")
    start = time.monotonic()
    version = core.nightly.run_nightly(config)
    _done(version, start, published[0])


def _compact(root: Path) -> None:
    import core.compaction

    newer = core.compaction._newer_deltas
    published = [0.0]

    def announced(*args: Any, **kwargs: Any) -> Any:
        if not published[0]:  # the first call under the publish lock, after the fold
            published[0] = _publishing()
        return newer(*args, **kwargs)

    core.compaction._newer_deltas = announced  # type: ignore[assignment]
    _say("READY")
    start = time.monotonic()
    result = core.compaction.compact_current(Layout(root))
    _done(result.version_id, start, published[0] or time.monotonic())


def _publishing() -> float:
    _say("PUBLISH")
    return time.monotonic()


def _done(version: str, start: float, published: float) -> None:
    now = time.monotonic()
    _say(f"DONE {version} {now - start:.4f} {now - published:.4f}")


def main(argv: list[str]) -> None:
    """Run the operation ``argv`` names (see the module docstring)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    kind, root = argv[0], Path(argv[1])
    if kind == "items":
        _items(root, argv[2], int(argv[3]), int(argv[4]), int(argv[5]) if len(argv) > 5 else 0)
    elif kind == "nightly":
        _nightly(root, int(argv[2]) if len(argv) > 2 else 1, argv[3] if len(argv) > 3 else "auto")
    elif kind == "compact":
        _compact(root)
    else:
        raise SystemExit(f"unknown operation {kind!r}: expected items, nightly or compact")
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])

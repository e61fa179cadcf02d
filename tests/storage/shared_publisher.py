"""Test helper, run as a child process on a store (its registry wherever the store's
binding says): publish versions in a loop, or hold a store lock.

    python -m tests.storage.shared_publisher publish ROOT SEED COUNT
        stage and publish COUNT versions on top of CURRENT, printing "step NAME" after
        each publish step and "won ID" / "lost ID" after each publish (flushed lines);
        with SEED >= 1000 it prints "ready" once staged, then waits for the file ROOT/go
        before the first publish.
    python -m tests.storage.shared_publisher lock ROOT NAME OWNER
        hold the store lock NAME, print "locked", then sleep until killed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from storage import Layout, PublishConflictError, VersionStore
from storage.backends import store_lock
from tests.storage.publisher import publish_staged, stage_version


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def publish(root: str, seed: int, count: int) -> None:
    store = VersionStore(Layout(Path(root)), keep_versions=3)
    for i in range(count):
        expected = store.current()
        vid = stage_version(store, seed=seed * 100 + i)
        if seed >= 1000 and i == 0:
            _say("ready")  # CURRENT read and the version staged: on the start line
            while not (Path(root) / "go").exists():
                time.sleep(0.001)
        try:
            publish_staged(store, vid, expected, hook=lambda step: _say(f"step {step}"))
            _say(f"won {vid}")
        except PublishConflictError:
            _say(f"lost {vid}")


def hold(root: str, name: str, owner: str) -> None:
    with store_lock(Layout(Path(root)), name, timeout_s=30, owner=owner):  # type: ignore[arg-type]
        _say("locked")
        time.sleep(3600)


if __name__ == "__main__":
    if sys.argv[1] == "publish":
        publish(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        hold(sys.argv[2], sys.argv[3], sys.argv[4])

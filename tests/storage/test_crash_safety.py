"""Crash safety of publish: a child process SIGKILLs itself at every step boundary (and
half-way through writing staging files); CURRENT must still name a complete,
checksum-valid version, and publishing must keep working."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage import PUBLISH_STEPS, Layout, VersionStore
from tests.storage.publisher import publish_staged, stage_version

REPO = Path(__file__).resolve().parents[2]
KILL_POINTS = ("writing", *PUBLISH_STEPS)


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_at_any_step_leaves_a_valid_current(tmp_path: Path, kill_at: str) -> None:
    layout = Layout(tmp_path / "store")
    store = VersionStore(layout, keep_versions=5)
    v1 = stage_version(store, "v1", seed=1)
    publish_staged(store, v1, None)
    v2 = "v2"

    child = subprocess.run(
        [sys.executable, "-m", "tests.storage.publisher", str(layout.root), v2, kill_at],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr

    committed = kill_at in PUBLISH_STEPS[PUBLISH_STEPS.index("committed") :]
    current = store.current()
    assert current == (v2 if committed else v1)
    store.verify(current)
    assert store.open_current().version_id == current
    # The child prunes with keep_versions=1: only once it got past the prune step is v1 gone.
    assert layout.version_dir(v1).is_dir() == (kill_at != "pruned")

    v3 = stage_version(store, "v3", seed=3)
    publish_staged(store, v3, current)
    assert store.open_current().version_id == "v3"
    # The next publisher removes what the dead one left, at once: its staging (its owner
    # process is gone) and an unregistered folder (it died between rename and commit).
    store.collect_dead(publish_locked=True)
    registered = {i.version_id for i in store.list_versions()}
    assert {p.name for p in layout.versions_dir.iterdir()} == registered
    assert not list(layout.staging_versions_dir.iterdir())

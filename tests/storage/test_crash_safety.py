"""Crash safety of publish: a child process SIGKILLs itself at every step boundary (and
half-way through writing staging files); CURRENT must still name a complete,
checksum-valid version, and publishing must keep working."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage import PUBLISH_STEPS, Layout, VersionStore
from storage.fs import is_temp_name
from tests.storage.conftest import BACKENDS, backend_layout
from tests.storage.publisher import publish_staged, stage_version

REPO = Path(__file__).resolve().parents[2]
KILL_POINTS = ("writing", *PUBLISH_STEPS)


@pytest.fixture(params=BACKENDS)
def any_layout(request: pytest.FixtureRequest, tmp_path: Path) -> Layout:
    return backend_layout(request, tmp_path / "store")


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_at_any_step_leaves_a_valid_current(any_layout: Layout, kill_at: str) -> None:
    layout = any_layout
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


# Dies where `write_owner` (the first step of staging) replaces its temporary file with
# the marker: the temporary file, complete, is all that is left.
_DIE_WRITING_MARKER = """
import os, signal, sys
from storage import Layout, VersionStore
from storage.snapshots import begin_snapshot
replace = os.replace
def die_before_the_marker_lands(src, dst):
    if str(dst).endswith(".owner"):
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst)
os.replace = die_before_the_marker_lands
layout = Layout(sys.argv[1])
if sys.argv[2] == "version":
    VersionStore(layout).begin("v2", kind="items")
else:
    begin_snapshot(layout, "snap-2")
"""


@pytest.mark.parametrize("staged", ["version", "snapshot"])
def test_sigkill_while_the_owner_marker_is_written_leaves_nothing_after_the_next_run(
    tmp_path: Path, staged: str
) -> None:
    layout = Layout(tmp_path / "store")
    child = subprocess.run(
        [sys.executable, "-c", _DIE_WRITING_MARKER, str(layout.root), staged],
        cwd=REPO,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL
    parent = layout.staging_versions_dir if staged == "version" else layout.staging_snapshots_dir
    (left,) = parent.iterdir()
    assert is_temp_name(left.name) and ".owner" in left.name

    removed = VersionStore(layout).collect_dead(publish_locked=True)  # the next locked run

    assert removed == [left] and not list(parent.iterdir())


def test_gc_removes_stray_staging_files_once_idle(tmp_path: Path) -> None:
    """Files no owner can be read for (a marker write cut before its bytes, a folder-less
    marker of another host) go with age, like abandoned folders."""
    layout = Layout(tmp_path / "store")
    store = VersionStore(layout)
    layout.staging_versions_dir.mkdir(parents=True)
    empty_tmp = layout.staging_versions_dir / ".v3.owner.tmp-999999-0badf00d"
    empty_tmp.write_bytes(b"")
    foreign = layout.staging_versions_dir / "v4.owner"
    foreign.write_text('{"host": "elsewhere", "pid": 1, "start_ticks": 1, "kind": "items"}')
    an_hour_ago = time.time() - 3600
    for stray in (empty_tmp, foreign):
        os.utime(stray, (an_hour_ago, an_hour_ago))
    live = store.begin("v5")

    assert store.collect_dead(publish_locked=True) == []  # owner unknown: not "dead"
    assert store.gc(min_age_s=7200) == []
    assert sorted(store.gc(min_age_s=600)) == sorted([empty_tmp, foreign])
    assert sorted(p.name for p in layout.staging_versions_dir.iterdir()) == ["v5", "v5.owner"]
    assert live.is_dir()

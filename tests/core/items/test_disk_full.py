"""Disk full during an items event (#14, "Garbage"): whatever write hits ENOSPC, CURRENT
and every kept version stay intact, nothing half-written stays in the store, and once
space is freed the redelivered event is published and served exactly once.

The store lives on a 24 MiB tmpfs mounted in a private mount namespace (root, or a user
namespace), filled to a few KiB of headroom before each attempt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.items.diskfull import HEADROOMS

REPO = Path(__file__).resolve().parents[3]
_MOUNT = 'mount -t tmpfs -o size=24m tmpfs "$0" && exec "$@"'


def _argv(mount: Path, *argv: str) -> list[str]:
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    namespace = ["unshare", "--mount", "--propagation", "private", *user]
    return [*namespace, "sh", "-c", _MOUNT, str(mount), *argv]


def test_disk_full_leaves_nothing_half_written_and_recovers(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("no unshare: cannot mount a small tmpfs")
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        _argv(mount, sys.executable, "-m", "tests.core.items.diskfull", str(mount / "store")),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and not proc.stdout:
        pytest.skip(f"cannot mount tmpfs here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == sum(len(levels) for levels in HEADROOMS.values())
    failed = [r for r in rows if r["outcome"] != "ok"]
    # The tight levels hit ENOSPC at several writes: the catalogue, the version's files,
    # the registry commit; each surfaces as one "No space left on device" error.
    assert {r["mode"] for r in failed} == {"event", "publish"}, rows
    assert all("No space left on device" in r["outcome"] for r in failed), rows
    assert any("registry.sqlite" in r["outcome"] for r in failed), rows
    assert any("sqlite" not in r["outcome"] for r in failed), rows  # a version file
    assert not any(r["moved"] for r in failed), rows
    for r in rows:
        assert r["leftovers_when_full"] == [], r
        assert r["leftovers_after"] == [], r
        assert r["served_once"], r

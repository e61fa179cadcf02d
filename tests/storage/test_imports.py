"""`storage` imports light (no Prefect, torch or faiss), does no I/O, and exports a
deliberate surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import storage

REPO = Path(__file__).resolve().parents[2]


def test_import_storage_pulls_no_prefect_torch_or_faiss(tmp_path: Path) -> None:
    code = (
        "import os, sys, storage, storage.versions, storage.artifacts\n"
        "print(sorted(m for m in ('prefect', 'torch', 'faiss', 'model') if m in sys.modules))\n"
        "print(sorted(os.listdir('.')))\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out == ["[]", "[]"]  # nothing imported, nothing created in the working dir


def test_all_is_explicit_and_resolvable() -> None:
    assert len(storage.__all__) == len(set(storage.__all__))
    for name in storage.__all__:
        assert getattr(storage, name) is not None, name
    public = {n for n in vars(storage) if not n.startswith("_")}
    submodules = {
        "artifacts",
        "catalogue",
        "errors",
        "fs",
        "layout",
        "manifest",
        "parquet",
        "registry",
        "retention",
    }
    # rawlog is imported on demand (it pulls in pandas); it shows up once any test used it.
    submodules |= {"rawlog", "schemas", "settings", "snapshots", "versions"}
    assert public - submodules == set(storage.__all__)

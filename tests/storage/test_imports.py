"""Importing `storage` does no I/O, and it exports a deliberate surface. (What it may
import, Prefect, torch and faiss excluded: tests/test_layers.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import storage

REPO = Path(__file__).resolve().parents[2]


def test_import_storage_creates_nothing(tmp_path: Path) -> None:
    code = (
        "import os, storage, storage.versions, storage.artifacts\nprint(sorted(os.listdir('.')))\n"
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
    assert out == ["[]"]  # nothing created in the working dir


def test_all_is_explicit_and_resolvable() -> None:
    assert len(storage.__all__) == len(set(storage.__all__))
    for name in storage.__all__:
        assert getattr(storage, name) is not None, name
    public = {n for n in vars(storage) if not n.startswith("_")}
    submodules = {
        "artifacts",
        "backends",
        "catalogue",
        "database",
        "errors",
        "fs",
        "integrity",
        "layout",
        "manifest",
        "objectstore",
        "remote_binding",
        "owners",
        "parquet",
        "publishing",
        "registry",
        "retention",
        "shards",
        "stepcache",
    }
    # The raw input readers are imported on demand (they pull in pandas and pyarrow's CSV
    # reader); they show up once any test used them.
    submodules |= {"rawlog", "rawparse", "rawstream", "rawtext"}
    # So are the PostgreSQL registry and catalogue (psycopg), by stores bound to a database.
    submodules |= {"pg_registry", "pg_catalogue", "pg_pool"}
    submodules |= {"chains"}  # imported by rollback and the core's readers
    submodules |= {
        "schemas",
        "settings",
        "snapshots",
        "versions",
        "version_reading",
        "version_views",
    }
    assert public - submodules == set(storage.__all__)

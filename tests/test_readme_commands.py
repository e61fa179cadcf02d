"""The README's main job as a user runs it: the installed `towerflow` script in a fresh
process, with a Prefect home that does not exist yet (as on a new machine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.prefect

SCRIPT = Path(sys.executable).with_name("towerflow")


def _towerflow(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "cli"]
    return subprocess.run(
        [*exe, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_run_then_recommend_in_fresh_processes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path / "not" / "yet" / "there")
    env["TOWERFLOW_ROOT"] = str(tmp_path / "store")
    run = _towerflow("run", "--scale", "tiny", "--epochs", "2", "--json", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    version = json.loads(run.stdout.strip().splitlines()[-1])["version"]

    rec = _towerflow("recommend", "--user-id", "1", "--k", "10", "--json", env=env)
    assert rec.returncode == 0, rec.stderr[-3000:]
    out = json.loads(rec.stdout)
    assert out["version"] == version
    assert len({r["item_id"] for r in out["items"]}) == 10
    shutil.rmtree(tmp_path / "not", ignore_errors=True)

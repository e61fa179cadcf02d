"""The README's Python API example runs as written, and the lazy ``core`` surface holds
exactly the names it documents."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import core

REPO = Path(__file__).resolve().parents[2]


def readme_api_example() -> str:
    """The first python code block of the README's "Python API" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


@pytest.mark.e2e
def test_readme_python_api_example_publishes_and_recalls(tmp_path: Path) -> None:
    # A fresh interpreter in an empty folder: the example's relative store lands there.
    proc = subprocess.run(
        [sys.executable, "-c", readme_api_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = re.fullmatch(r"(\S+) (\[.*?\]) (\[.*?\])", proc.stdout.strip())
    assert printed, proc.stdout
    version, items, scores = printed[1], json.loads(printed[2]), json.loads(printed[3])
    assert version.startswith("v") and (tmp_path / "demo-store" / "versions" / version).is_dir()
    assert len(items) == 10 and len(set(items)) == 10
    assert scores == sorted(scores, reverse=True)  # best first
    store = core.open_store(tmp_path / "demo-store")
    assert store.current() == version
    assert "prefect" not in proc.stderr.lower()  # no server was started


def test_core_exports_load_lazily_and_exist() -> None:
    code = (
        "import sys, core\n"
        "heavy = [m for m in ('torch', 'faiss', 'prefect') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr
    for name in core.__all__:
        assert getattr(core, name) is not None, name
    assert sorted(core.__all__) == sorted(core._HOME)

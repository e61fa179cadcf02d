"""``service`` sits on the recall core and storage, never on Prefect; its surface is the
names in ``__all__``."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_layers import imports_of

REPO = Path(__file__).resolve().parents[2]
MODULES = [
    "service",
    "service.app",
    "service.limits",
    "service.schemas",
    "service.settings",
    "service.state",
    "core.recall",
]


def test_importing_the_service_does_not_pull_in_prefect() -> None:
    code = (
        "import importlib, json, sys\n"
        f"for name in {MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.splitlines()[-1]))
    assert set(MODULES) <= loaded
    assert sorted(m for m in loaded if m.split(".")[0] in {"prefect", "flows"}) == []


def test_no_service_file_imports_prefect_flows_or_the_cli() -> None:
    bad = []
    for path in sorted((REPO / "service").rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for line, name in imports_of(path.read_text(encoding="utf-8"), module):
            if name.split(".")[0] in {"prefect", "flows"} or name == "cli.app":
                bad.append(f"{path.name}:{line}: {name}")
    assert bad == []


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ and all(hasattr(module, n) for n in module.__all__)

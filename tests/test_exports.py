"""Every module states its surface: a non-empty ``__all__`` whose names all exist (package
``__init__`` files without code are exempt). Layering is tests/test_layers.py."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("model", "storage", "core", "tasks", "flows", "service", "cli")


def _modules() -> list[str]:
    names = []
    for room in ROOMS:
        for path in sorted((REPO / room).glob("*.py")):
            if path.stem == "__main__":
                continue  # runs the CLI when imported
            body = ast.parse(path.read_text(encoding="utf-8")).body
            if path.stem == "__init__" and all(isinstance(n, ast.Expr) for n in body):
                continue  # a docstring only
            names.append(room if path.stem == "__init__" else f"{room}.{path.stem}")
    return names


def test_every_room_is_covered() -> None:
    assert {"core.recall", "service.app", "storage.versions", "tasks.train"} <= set(_modules())


@pytest.mark.parametrize("name", _modules())
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names what it does not define: {missing}"

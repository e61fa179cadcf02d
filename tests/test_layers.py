"""Imports point one way: flows -> tasks -> {model, storage}. ``model`` and ``storage`` never
import Prefect or each other, and ``tasks`` never reaches up into ``flows`` or the CLI.

Checked twice: at run time (import every module in a fresh interpreter, then look at
``sys.modules``) and statically (every import statement of every file, including ones a
run-time check cannot see, such as imports inside functions or ``TYPE_CHECKING`` blocks).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# package -> top-level packages its files must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "model": frozenset({"prefect", "storage", "tasks", "flows", "towerflow"}),
    "storage": frozenset({"prefect", "model", "tasks", "flows", "towerflow"}),
    "tasks": frozenset({"flows", "towerflow"}),
}


def _modules(package: str) -> list[str]:
    root = REPO / package
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _imported_in_fresh_interpreter(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


def _top_level(name: str) -> str:
    return name.split(".", 1)[0]


def imports_of(source: str, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, the file of ``module``.

    Relative imports are resolved against ``module``; ``importlib.import_module("x")`` and
    ``__import__("x")`` with a literal name count as imports of ``x``.
    """
    package = module.split(".")
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((node.lineno, name))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            literal = arg.value if isinstance(arg, ast.Constant) else None
            if callee in {"import_module", "__import__"} and isinstance(literal, str):
                found.append((node.lineno, literal))
    return found


def _violations(package: str) -> list[str]:
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        rel = path.relative_to(REPO)
        module = ".".join(rel.with_suffix("").parts)
        for line, name in imports_of(path.read_text(encoding="utf-8"), module):
            if _top_level(name) in FORBIDDEN[package]:
                bad.append(f"{rel}:{line}: imports {name}")
    return bad


def test_importing_all_of_model_pulls_in_neither_prefect_nor_storage() -> None:
    modules = _modules("model")
    expected = {
        "model.config", "model.towers", "model.losses", "model.features", "model.dataset",
        "model.train", "model.embed", "model.synthetic", "model.metrics", "model.index",
    }  # fmt: skip
    assert expected <= set(modules)
    loaded = _imported_in_fresh_interpreter(modules)
    assert set(modules) <= loaded  # the check below is not vacuous
    assert sorted({_top_level(m) for m in loaded} & {"prefect", "storage", "tasks", "flows"}) == []


def test_importing_all_of_storage_pulls_in_neither_prefect_model_nor_tasks() -> None:
    modules = _modules("storage")
    assert {"storage", "storage.artifacts", "storage.versions"} <= set(modules)
    loaded = _imported_in_fresh_interpreter(modules)
    assert set(modules) <= loaded
    assert sorted({_top_level(m) for m in loaded} & {"prefect", "model", "tasks", "flows"}) == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_file_imports_across_the_layers(package: str) -> None:
    assert list((REPO / package).rglob("*.py")), f"no files found under {package}/"
    assert _violations(package) == []


def test_import_scanner_sees_every_form_of_import() -> None:
    source = (
        "import prefect\n"
        "import os, storage.fs as fs\n"
        "from prefect.logging import get_logger\n"
        "from .. import flows\n"
        "from ..storage import layout\n"
        "from . import sibling\n"
        "def lazy():\n"
        "    import cli.app\n"
        "    importlib.import_module('tasks.train')\n"
        "    __import__('model')\n"
    )
    found = imports_of(source, "model.sub.mod")
    assert sorted(found) == [
        (1, "prefect"),
        (2, "os"),
        (2, "storage.fs"),
        (3, "prefect.logging"),
        (4, "model"),  # relative: model.sub.mod -> ..  = model
        (5, "model.storage"),  # a sibling package, not the top-level storage
        (6, "model.sub"),
        (8, "cli.app"),
        (9, "tasks.train"),
        (10, "model"),
    ]
    flagged = {name for _, name in found if _top_level(name) in FORBIDDEN["model"]}
    assert flagged == {"prefect", "prefect.logging", "storage.fs", "cli.app", "tasks.train"}

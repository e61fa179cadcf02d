"""The layering of the project's packages ("rooms"), checked in one place.

Arrows: ``cli -> {flows, service, core}``, ``flows -> tasks -> core -> {model, storage}``,
``service -> core`` (service may also use storage and model). ``FORBIDDEN`` below is the
precise rule: the top-level packages, the project's and third-party ones, that the files
of each room must never import. Nothing outside ``bench/`` and ``tests/`` imports bench or
``devtools`` (local servers for tests and trials), and devtools imports no project room.

Enforced three ways:

* statically: every import statement of every file of every room, including imports
  inside functions and ``TYPE_CHECKING`` blocks that a run-time check cannot see, and
  ``importlib.import_module`` / ``__import__`` calls with a literal name;
* at run time: every module of model, storage, core and service imported in a fresh
  interpreter, then ``sys.modules`` checked (this also catches what a room pulls in
  through a third-party package);
* no import cycles in the module graph of all rooms (static, every import counted; an
  import of a package counts as an import of its ``__init__``).

Besides: every top-level package is a room with rules, and every import of a project
module names one that exists (lazy imports of moved modules fail only when called).

Violations print as ``path:line: imports name``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]

_ROOMS = ("model", "storage", "core", "tasks", "flows", "service", "cli", "bench", "devtools")
_UI = frozenset({"prefect", "typer", "fastapi"})

# room -> top-level packages its files must never import (statically or at run time).
_WEB = frozenset({"typer", "fastapi"})  # the CLI's and the HTTP service's frameworks
FORBIDDEN: dict[str, frozenset[str]] = {
    "model": frozenset({"storage", "core", "tasks", "flows", "cli", "service", "bench"}) | _UI,
    "storage": frozenset({"model", "core", "tasks", "flows", "cli", "service", "bench"}) | _UI,
    "core": frozenset({"tasks", "flows", "cli", "service", "bench"} | _UI | {"uvicorn", "rich"}),
    # Local servers for tests and trials; may drive the CLI's Prefect helpers.
    "devtools": frozenset({"model", "storage", "core", "tasks", "flows", "service", "bench"}),
    # tasks and flows reach model and storage only through core.
    "tasks": frozenset(
        {"model", "storage", "flows", "cli", "service", "bench", "typer", "fastapi"}
    ),
    "flows": frozenset({"model", "storage", "cli", "service", "bench", "typer", "fastapi"}),
    "service": frozenset({"tasks", "flows", "cli", "bench", "prefect", "typer"}),
    # cli reaches the pipeline through flows and core (and storage for its error types).
    "cli": frozenset({"model", "tasks", "bench"}),
    "bench": frozenset(),
}
# Production rooms never import the developer tools either.
for _room in ("model", "storage", "core", "tasks", "flows", "service", "cli"):
    FORBIDDEN[_room] = FORBIDDEN[_room] | {"devtools"}
assert set(FORBIDDEN) == set(_ROOMS)

# Rooms imported module by module in a fresh interpreter, and what else must stay out of
# sys.modules there (storage promises not to load torch or faiss: it is imported by the
# service and CLI for cheap commands).
RUNTIME_ROOMS = ("model", "storage", "core", "service")
RUNTIME_EXTRA: dict[str, frozenset[str]] = {"storage": frozenset({"torch", "faiss"})}


# -- finding modules and their imports ----------------------------------------------------


class Module(NamedTuple):
    name: str  # dotted, "pkg" for pkg/__init__.py
    path: Path

    @property
    def resolve_as(self) -> str:
        """The name relative imports resolve against (``pkg.__init__`` for a package)."""
        return f"{self.name}.__init__" if self.path.name == "__init__.py" else self.name


def modules_of(room: str, root: Path = REPO) -> list[Module]:
    """Every module under ``root/room``, sorted by name."""
    out = []
    for path in sorted((root / room).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out.append(Module(".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return out


class Import(NamedTuple):
    line: int
    module: str  # the module named by the statement, relative imports resolved
    names: tuple[str, ...] = ()  # `from module import names` (may be submodules)


def imports_of(source: str, module: str) -> list[Import]:
    """Every import in ``source``, the file of ``module`` (``pkg.__init__`` for a package).

    Relative imports are resolved against ``module``; ``importlib.import_module("x")`` and
    ``__import__("x")`` with a literal name count as imports of ``x``.
    """
    package = module.split(".")[:-1]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            names = tuple(a.name for a in node.names if a.name != "*")
            found.append(Import(node.lineno, name, names))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            callee = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            literal = arg.value if isinstance(arg, ast.Constant) else None
            if callee in {"import_module", "__import__"} and isinstance(literal, str):
                found.append(Import(node.lineno, literal))
    return found


def _top_level(name: str) -> str:
    return name.split(".", 1)[0]


def layer_violations(room: str, root: Path = REPO) -> list[str]:
    """``path:line: imports name`` for each import in ``room`` of a forbidden package."""
    bad = []
    for mod in modules_of(room, root):
        source = mod.path.read_text(encoding="utf-8")
        for imp in imports_of(source, mod.resolve_as):
            if _top_level(imp.module) in FORBIDDEN[room]:
                bad.append(f"{mod.path.relative_to(root)}:{imp.line}: imports {imp.module}")
    return bad


def _report(lines: Iterable[str]) -> str:
    return "\n" + "\n".join(lines)


# -- static layer rules --------------------------------------------------------------------


def test_every_python_package_of_the_project_is_a_room() -> None:
    # A new top-level package would escape every rule: it has to be given its own.
    skip = {"tests", "build", "dist"}
    found = {
        folder.name
        for folder in REPO.iterdir()
        if folder.is_dir()
        and not folder.name.startswith(".")  # .venv, .git, caches, the local store
        and folder.name not in skip
        and not folder.name.endswith(".egg-info")
        and any(folder.rglob("*.py"))
    }
    assert found == set(_ROOMS)
    assert list(REPO.glob("*.py")) == [], "no top-level scripts outside the rooms"


@pytest.mark.parametrize("room", _ROOMS)
def test_no_file_imports_across_the_layers(room: str) -> None:
    assert modules_of(room), f"no files found under {room}/"
    bad = layer_violations(room)
    assert not bad, _report(bad)


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
        "if TYPE_CHECKING:\n"
        "    from bench.measure import set_threads\n"
    )
    found = imports_of(source, "model.sub.mod")
    assert sorted(found) == [
        (1, "prefect", ()),
        (2, "os", ()),
        (2, "storage.fs", ()),
        (3, "prefect.logging", ("get_logger",)),
        (4, "model", ("flows",)),  # relative: model.sub.mod -> ..  = model
        (5, "model.storage", ("layout",)),  # a sibling package, not the top-level storage
        (6, "model.sub", ("sibling",)),
        (8, "cli.app", ()),
        (9, "tasks.train", ()),
        (10, "model", ()),
        (12, "bench.measure", ("set_threads",)),
    ]
    flagged = {imp.module for imp in found if _top_level(imp.module) in FORBIDDEN["model"]}
    assert flagged == {
        "prefect",
        "prefect.logging",
        "storage.fs",
        "cli.app",
        "tasks.train",
        "bench.measure",
    }
    # In a package's __init__, "." is the package itself.
    assert imports_of("from . import a\nfrom .b import c\n", "pkg.__init__") == [
        (1, "pkg", ("a",)),
        (2, "pkg.b", ("c",)),
    ]


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or path.is_dir()


def stale_imports(rooms: Iterable[str], root: Path = REPO) -> list[str]:
    """``path:line: imports name`` for each import of a project module that does not exist
    (a module moved or removed; ``towerflow`` was the old package). Lazy imports would
    otherwise fail only when their function runs."""
    project = {*rooms, "tests", "towerflow"}
    bad = []
    for room in rooms:
        for mod in modules_of(room, root):
            for imp in imports_of(mod.path.read_text(encoding="utf-8"), mod.resolve_as):
                if _top_level(imp.module) in project and not _is_module(imp.module, root):
                    bad.append(f"{mod.path.relative_to(root)}:{imp.line}: imports {imp.module}")
    return bad


def test_every_import_of_a_project_module_resolves() -> None:
    bad = stale_imports([*_ROOMS, "tests"])
    assert not bad, _report(bad)


def test_stale_import_check_flags_a_missing_module(tmp_path: Path) -> None:
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "a.py").write_text("from core.b import x\nimport core\n")
    (tmp_path / "core" / "b.py").write_text("def f():\n    from core.gone import y\n")
    assert stale_imports(["core"], tmp_path) == ["core/b.py:2: imports core.gone"]


def test_layer_check_flags_a_planted_violation(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "ok.py").write_text("import numpy\nfrom model import ok\n")
    (tmp_path / "model" / "bad.py").write_text("def f():\n    from storage import Layout\n")
    assert layer_violations("model", tmp_path) == ["model/bad.py:2: imports storage"]


# -- run-time layer rules ------------------------------------------------------------------


def loaded_in_fresh_interpreter(
    modules: list[str], root: Path = REPO
) -> tuple[set[str], dict[str, str]]:
    """(sys.modules after importing ``modules`` from ``root`` in a new interpreter,
    module -> error for those that failed)."""
    code = (
        "import importlib, json, sys\n"
        "errors = {}\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        errors[name] = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps({'loaded': sorted(sys.modules), 'errors': errors}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    return set(out["loaded"]), out["errors"]


def runtime_leaks(room: str, forbidden: frozenset[str], root: Path = REPO) -> list[str]:
    """The forbidden top-level packages in sys.modules after importing every module of
    ``room``; asserts each module imported (so an empty answer means something)."""
    modules = [m.name for m in modules_of(room, root) if not m.name.endswith("__main__")]
    loaded, errors = loaded_in_fresh_interpreter(modules, root)
    assert not errors, _report(f"{name}: {err}" for name, err in errors.items())
    assert set(modules) <= loaded
    return sorted({_top_level(m) for m in loaded} & forbidden)


@pytest.mark.parametrize("room", RUNTIME_ROOMS)
def test_importing_every_module_of_a_room_loads_nothing_forbidden(room: str) -> None:
    assert len(modules_of(room)) >= 5, f"too few modules found under {room}/"
    forbidden = FORBIDDEN[room] | RUNTIME_EXTRA.get(room, frozenset())
    leaked = runtime_leaks(room, forbidden)
    assert leaked == [], f"importing {room}/ loads {leaked}"


def test_runtime_check_flags_a_planted_leak(tmp_path: Path) -> None:
    for name, extra in (("cleanroom", "import json\n"), ("leakyroom", "import email.mime\n")):
        room = tmp_path / name
        room.mkdir()
        (room / "__init__.py").write_text("")
        (room / "a.py").write_text("import os\n")
        (room / "b.py").write_text(extra)
    forbidden = frozenset({"email", "typer"})
    assert runtime_leaks("cleanroom", forbidden, tmp_path) == []
    assert runtime_leaks("leakyroom", forbidden, tmp_path) == ["email"]


# -- import cycles -------------------------------------------------------------------------


class Edge(NamedTuple):
    source: str
    target: str
    where: str  # "path:line"


def module_graph(modules: Iterable[Module], root: Path = REPO) -> dict[str, list[Edge]]:
    """module -> its imports of other modules among ``modules``.

    ``import a.b`` and ``from a.b import x`` point at module ``a.b`` (``a/b.py`` or
    ``a/b/__init__.py``; the longest prefix that is a module when the full name is not);
    ``from a import b`` points at ``a.b`` when that is a module, else at ``a``. Imports of
    anything else and a package's imports of itself are left out.
    """
    mods = list(modules)
    known = {m.name for m in mods}

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in known:
                return ".".join(parts[:end])
        return None

    graph: dict[str, list[Edge]] = {m.name: [] for m in mods}
    for mod in mods:
        where = mod.path.relative_to(root)
        for imp in imports_of(mod.path.read_text(encoding="utf-8"), mod.resolve_as):
            subs = [f"{imp.module}.{n}" for n in imp.names if f"{imp.module}.{n}" in known]
            targets = set(subs)
            if len(subs) < len(imp.names) or not imp.names:
                targets.add(resolve(imp.module) or "")
            for target in sorted(targets - {"", mod.name}):
                graph[mod.name].append(Edge(mod.name, target, f"{where}:{imp.line}"))
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of ``graph`` with more than one node (the
    import cycles), each sorted, in sorted order. Iterative: no recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    succ = {v: sorted(set(ws)) for v, ws in graph.items()}
    for start in sorted(succ):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            nexts = succ.get(v, [])
            if i < len(nexts):
                work.append((v, i + 1))
                w = nexts[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return sorted(found)


def describe_cycle(component: list[str], graph: Mapping[str, list[Edge]]) -> list[str]:
    """One shortest cycle through the component's first module, edge by edge."""
    inside, start = set(component), component[0]
    came: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for e in graph[v]:
            if e.target == start:
                path = [e]
                while path[0].source != start:
                    path.insert(0, came[path[0].source])
                return [f"{e.where}: {e.source} imports {e.target}" for e in path]
            if e.target in inside and e.target not in came:
                came[e.target] = e
                queue.append(e.target)
    raise AssertionError(f"{component} is no cycle")


def _cycle_report(graph: Mapping[str, list[Edge]]) -> list[str]:
    succ = {v: [e.target for e in es] for v, es in graph.items()}
    lines = []
    for component in strongly_connected(succ):
        lines.append(f"cycle among {', '.join(component)}:")
        lines += [f"  {step}" for step in describe_cycle(component, graph)]
    return lines


def test_no_import_cycles() -> None:
    graph = module_graph(m for room in _ROOMS for m in modules_of(room))
    assert sum(len(es) for es in graph.values()) > 100  # the graph is not empty
    cycles = _cycle_report(graph)
    assert not cycles, _report(cycles)


def test_cycle_detector_finds_a_planted_cycle() -> None:
    graph = {
        "a": ["b"],
        "b": ["c", "d"],
        "c": ["a"],  # a -> b -> c -> a
        "d": ["e"],
        "e": [],
        "x": ["y"],
        "y": ["x"],  # a second, separate cycle
        "z": ["a", "z"],  # a self-loop is no cycle here (a package importing itself)
    }
    assert strongly_connected(graph) == [["a", "b", "c"], ["x", "y"]]
    acyclic = {"a": ["b", "c"], "b": ["c"], "c": [], "d": ["a", "c"]}
    assert strongly_connected(acyclic) == []
    # Deep chains do not hit the recursion limit.
    chain = {str(i): [str(i + 1)] for i in range(5000)}
    assert strongly_connected({**chain, "5000": ["0"]}) == [sorted(map(str, range(5001)))]


def test_module_graph_counts_a_package_import_as_its_init(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from pkg.a import f\nfrom . import b\n")
    (pkg / "a.py").write_text("def f():\n    from pkg import g  # the package: its __init__\n")
    (pkg / "b.py").write_text("from pkg import c\nimport pkg.c\n")  # a submodule, not pkg
    (pkg / "c.py").write_text("import os\n")
    graph = module_graph(modules_of("pkg", tmp_path), tmp_path)
    assert {v: sorted(e.target for e in es) for v, es in graph.items()} == {
        "pkg": ["pkg.a", "pkg.b"],
        "pkg.a": ["pkg"],
        "pkg.b": ["pkg.c", "pkg.c"],
        "pkg.c": [],
    }
    assert _cycle_report(graph) == [
        "cycle among pkg, pkg.a:",
        "  pkg/__init__.py:1: pkg imports pkg.a",
        "  pkg/a.py:2: pkg.a imports pkg",
    ]

"""Every third-party package the production code imports is declared in pyproject.toml:
in `dependencies`, or in an optional extra when only an optional feature imports it."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRODUCTION = ("cli", "core", "flows", "tasks", "model", "storage", "service")
# Imported only inside the optional feature that needs it (with an error naming the extra).
OPTIONAL = {"mlflow": "mlflow"}


def _imported_roots() -> dict[str, set[str]]:
    """Top-level module name -> the files that import it."""
    found: dict[str, set[str]] = {}
    for package in PRODUCTION:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def _requirement_name(spec: str) -> str:
    return re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_every_imported_distribution_is_declared() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = {_requirement_name(s) for s in project["dependencies"]}
    extras = {
        extra: {_requirement_name(s) for s in specs}
        for extra, specs in project["optional-dependencies"].items()
    }
    distributions = md.packages_distributions()
    local = set(PRODUCTION) | {"bench", "tests"}
    missing = []
    third_party = {
        m: files
        for m, files in _imported_roots().items()
        if m not in sys.stdlib_module_names and m not in local and m != "__future__"
    }
    assert {"torch", "faiss", "prefect", "fastapi", "prometheus_client"} <= set(third_party)
    for module, files in sorted(third_party.items()):
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        where = extras[OPTIONAL[module]] if module in OPTIONAL else declared
        if not dists & where:
            missing.append(f"{module} ({', '.join(sorted(dists))}) imported by {sorted(files)}")
    assert missing == [], "imported but not declared in pyproject.toml:\n" + "\n".join(missing)

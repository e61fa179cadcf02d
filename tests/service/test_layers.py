"""The service's surface is the names in ``__all__``. (Its layering: tests/test_layers.py.)"""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "service",
    "service.app",
    "service.limits",
    "service.schemas",
    "service.settings",
    "service.state",
    "core.recall",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ and all(hasattr(module, n) for n in module.__all__)

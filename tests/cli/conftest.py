"""Fixtures the command tests share with the core's item-catalogue tests."""

from tests.core.items.conftest import make_store

__all__ = ["make_store"]

"""Fixtures for storage tests: a fresh store under `tmp_path`."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Layout, VersionStore


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "store")


@pytest.fixture
def store(layout: Layout) -> VersionStore:
    return VersionStore(layout, keep_versions=5)

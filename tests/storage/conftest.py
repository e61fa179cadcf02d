"""Fixtures for storage tests: a fresh store under `tmp_path`; `backend_layout` makes one
whose registry is in SQLite or in PostgreSQL (a schema of its own on the session's
server), for the files that run the publish protocol on both."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import Layout, VersionStore
from storage.database import bind_database

BACKENDS = ("sqlite", "postgresql")


def backend_layout(request: pytest.FixtureRequest, path: Path) -> Layout:
    """A store at ``path`` on the backend ``request.param`` names."""
    layout = Layout(path)
    if request.param == "postgresql":
        bind_database(layout, request.getfixturevalue("pg_url"))
    return layout


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "store")


@pytest.fixture
def store(layout: Layout) -> VersionStore:
    return VersionStore(layout, keep_versions=5)

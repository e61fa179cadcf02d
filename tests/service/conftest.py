"""A real uvicorn server on 127.0.0.1 in a background thread, and a service over the
store the session published (see tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.http_server import serve_in_thread
from service import ApiSettings, RecallService, create_app
from storage import Layout, VersionStore
from tests.conftest import Published

# Run an app (lifespan included) under uvicorn on a free loopback port; yields its URL.
serve = serve_in_thread


@pytest.fixture(scope="session")
def live_service(published: Published) -> RecallService:
    """A service over the published store, loaded once (no watcher: tests only read)."""
    service = RecallService(VersionStore(Layout(published.root)))
    assert service.refresh()
    return service


@pytest.fixture(scope="session")
def api_url(published: Published) -> Iterator[str]:
    """The API over the published store, served by uvicorn for the whole session."""
    service = RecallService(VersionStore(Layout(published.root)), poll_interval_s=0.2)
    with serve(create_app(service, ApiSettings(max_body_bytes=8192))) as url:
        yield url

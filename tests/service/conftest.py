"""A real uvicorn server on 127.0.0.1 in a background thread, and a service over the
store the session published (see tests/conftest.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi import FastAPI

from service import ApiSettings, RecallService, create_app
from storage import Layout, VersionStore
from tests.conftest import Published


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` (lifespan included) under uvicorn on a free loopback port; yield its URL."""
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets; without it Nagle
    # and delayed ACKs add ~40 ms to every response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


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

"""`towerflow serve --ui`'s server handling without a real Prefect server: a server already
answering is reused and left running, a port taken by something else and a server that dies
at start fail with messages that say what happened."""

from __future__ import annotations

import http.server
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.live import free_port
from cli import prefect_server
from cli.app import app
from cli.prefect_server import local_prefect_server, probe_server


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers /api/health like Prefect (`true`) when the server's `prefect` flag is set,
    else 404 (a web server that is not Prefect)."""

    def do_GET(self) -> None:
        prefect = getattr(self.server, "prefect", False)
        ok = prefect and self.path == "/api/health"
        body = b"true" if ok else b"not found"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: no access log on stderr."""


def _http_server(prefect: bool) -> Iterator[int]:
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.prefect = prefect  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_prefect() -> Iterator[int]:
    yield from _http_server(prefect=True)


@pytest.fixture
def not_prefect() -> Iterator[int]:
    yield from _http_server(prefect=False)


def test_probe_tells_prefect_other_and_free(fake_prefect: int, not_prefect: int) -> None:
    assert probe_server(f"http://127.0.0.1:{fake_prefect}") == "prefect"
    assert probe_server(f"http://127.0.0.1:{not_prefect}") == "other"
    assert probe_server(f"http://127.0.0.1:{free_port()}") == "free"


def test_a_running_server_is_reused_and_left_running(fake_prefect: int, tmp_path: Path) -> None:
    with local_prefect_server(fake_prefect, tmp_path / "server.log") as server:
        assert server.process is None
        assert server.api_url == f"http://127.0.0.1:{fake_prefect}/api"
    assert probe_server(server.url) == "prefect"
    assert not (tmp_path / "server.log").exists()


def test_reuse_can_be_refused(fake_prefect: int, tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="taken by another Prefect server"),
        local_prefect_server(fake_prefect, tmp_path / "server.log", reuse=False),
    ):
        pass


def test_serve_ui_on_a_port_taken_by_something_else_fails_clearly(
    not_prefect: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What serve sets in the environment goes when the test ends.
    monkeypatch.setenv("TOWERFLOW_ROOT", str(tmp_path))
    monkeypatch.setenv("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    monkeypatch.setenv("PREFECT_LOGGING_EXTRA_LOGGERS", "model,storage,core,tasks,cli,towerflow")
    result = CliRunner().invoke(
        app, ["serve", "--ui", "--port", str(not_prefect), "--root", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert f"port {not_prefect} on 127.0.0.1 is taken by something that is not Prefect" in (
        result.output
    )
    assert "--port" in result.output


def test_a_server_that_dies_at_start_shows_its_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A stand-in for `prefect server start` that fails the way a real one does.
    script = "import sys; print('ERROR:    Application startup failed. Exiting.'); sys.exit(3)"
    monkeypatch.setattr(prefect_server, "_prefect_exe", lambda: [sys.executable, "-c", script])
    log = tmp_path / "logs" / "server.log"
    with (
        pytest.raises(RuntimeError) as raised,
        local_prefect_server(free_port(), log, timeout_s=30),
    ):
        pass
    message = str(raised.value)
    assert "exited with 3 before it was healthy" in message
    assert str(log) in message and "Application startup failed" in message

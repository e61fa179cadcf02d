"""A real Prefect server on 127.0.0.1 and `towerflow serve` (or `towerflow serve --ui`, which
starts its own server) as subprocesses, with private state (PREFECT_HOME in a temp dir), for
the end-to-end items and UI tests and the freshness benchmark. Every process is started in
its own session and its group killed on exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from cli.prefect_server import local_prefect_server, stop_process_group

__all__ = [
    "LiveServer",
    "free_port",
    "live_prefect",
    "prefect_env",
    "served",
    "served_ui",
    "wait_for",
]

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prefect_env(home: Path, api_url: str | None) -> dict[str, str]:
    """Environment of every process that talks to the live server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def wait_for(
    what: str, check: Any, timeout_s: float, proc: subprocess.Popen[Any] | None = None
) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` on timeout
    (or when `proc` died, with its output)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}")
        try:
            value = check()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class LiveServer:
    """A running `prefect server start`: its API URL and a small REST client."""

    def __init__(self, api_url: str, home: Path) -> None:
        self.api_url = api_url
        self.home = home
        self.env = prefect_env(home, api_url)

    @property
    def ui_url(self) -> str:
        """Where the server's UI is (its API URL without `/api`)."""
        return self.api_url.removesuffix("/api")

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api_url}{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def flow_runs(self, deployment: str) -> list[dict[str, Any]]:
        return list(
            self.post(
                "/flow_runs/filter", {"deployments": {"name": {"any_": [deployment]}}, "limit": 200}
            )
        )

    def runs_of_flow(self, flow: str) -> list[dict[str, Any]]:
        """Flow runs of the flow named `flow` (deployed or not), newest first."""
        return list(
            self.post(
                "/flow_runs/filter",
                {"flows": {"name": {"any_": [flow]}}, "limit": 200, "sort": "START_TIME_DESC"},
            )
        )

    def artifacts(self, key: str) -> list[dict[str, Any]]:
        return list(self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}}))


@contextmanager
def live_prefect(home: Path, log: Path) -> Iterator[LiveServer]:
    """`prefect server start` (API and UI) on a free loopback port; yields once /api/health
    answers."""
    port = free_port()
    # Never reuse: a server that happens to answer there has someone else's state.
    with local_prefect_server(port, log, env=prefect_env(home, None), reuse=False) as server:
        yield LiveServer(server.api_url, home)


@contextmanager
def served(
    server: LiveServer, root: Path, log: Path, items_events: str = "stream"
) -> Iterator[subprocess.Popen[bytes]]:
    """`towerflow serve --root root --items-events items_events`; yields once items events
    are taken: the consumer listens (stream), or both new-items automations exist
    (trigger)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "towerflow"), "serve", "--root", str(root), "--items-events", items_events],
            env=server.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def triggers() -> bool:
            autos = server.post("/automations/filter", {})
            triggers = {e for a in autos for e in a["trigger"].get("expect", [])}
            return {"towerflow.items.created", "towerflow.items.retired"} <= triggers

        def listening() -> bool:
            return b"applied by the consumer" in log.read_bytes() and bool(
                server.post("/deployments/filter", {})
            )

        ready = listening if items_events == "stream" else triggers
        wait_for(f"`towerflow serve` to take items events (log {log})", ready, 120, proc)
        time.sleep(1.0)  # the runner's first poll
        yield proc
    finally:
        stop_process_group(proc)


@contextmanager
def served_ui(
    home: Path, root: Path, log: Path
) -> Iterator[tuple[LiveServer, subprocess.Popen[bytes]]]:
    """`towerflow serve --ui` on a free loopback port (it starts its own Prefect server);
    yields the server and the serve process once the deployments are registered."""
    port = free_port()
    server = LiveServer(f"http://127.0.0.1:{port}/api", home)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "towerflow"), "serve", "--ui", "--port", str(port), "--root", str(root)],
            env=prefect_env(home, None),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            names = {d["name"] for d in server.post("/deployments/filter", {})}
            return {"nightly", "new-items"} <= names

        wait_for(f"`towerflow serve --ui` to serve its deployments (log {log})", ready, 150, proc)
        yield server, proc
    finally:
        stop_process_group(proc)

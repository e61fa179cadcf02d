"""A local Prefect server (API and UI) as a subprocess: `prefect server start` on loopback
for `towerflow serve --ui`, the live tests, the benchmarks and `devtools.stack`; probing
what answers on a port, and stopping a process group."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from cli.errors import PrefectServerUnavailable

__all__ = [
    "DEFAULT_PORT",
    "LOCAL_HOST",
    "LocalServer",
    "local_prefect_server",
    "log_tail",
    "probe_server",
    "server_env",
    "stop_process_group",
]

logger = logging.getLogger(__name__)

LOCAL_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 4200


@dataclass(frozen=True)
class LocalServer:
    """A Prefect server on loopback: its UI and API URLs, and the process when we started it
    (None when an already running server was reused)."""

    url: str
    process: subprocess.Popen[bytes] | None
    log: Path | None

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def probe_server(url: str, timeout_s: float = 2.0) -> Literal["prefect", "other", "free"]:
    """What answers at `url` (no `/api`): a healthy Prefect server, something else, or
    nothing (connection refused)."""
    import httpx

    try:
        response = httpx.get(f"{url}/api/health", timeout=timeout_s)
    except httpx.ConnectError:
        return "free"
    except httpx.HTTPError:
        return "other"  # it accepted the connection but spoke no (quick) HTTP
    try:
        healthy = response.status_code == 200 and response.json() is True
    except ValueError:
        healthy = False
    return "prefect" if healthy else "other"


def _prefect_exe() -> list[str]:
    """`prefect` of this interpreter's environment (a venv's bin/), else `python -m prefect`."""
    exe = Path(sys.executable).with_name("prefect")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def server_env(url: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of `prefect server start` serving at `url`."""
    env = dict(os.environ if base is None else base)
    # `--port` does not reach the UI's settings: without these the browser app calls
    # http://127.0.0.1:4200/api whatever the port ("Unable to connect to Prefect server").
    env["PREFECT_UI_API_URL"] = f"{url}/api"
    env.pop("PREFECT_API_URL", None)  # this server is the API, not a client of another one
    # Offline, the telemetry job logs an error and often a "database is locked" traceback.
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    return env


def log_tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log file (for error messages)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text.rstrip().splitlines()[-lines:])


def stop_process_group(proc: subprocess.Popen[Any], timeout_s: float = 15) -> None:
    """SIGTERM the group `proc` leads (started with `start_new_session`: it and its
    children), then SIGKILL it if it is still there after `timeout_s`."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_healthy(server: LocalServer, timeout_s: float) -> None:
    """Return once the server's health check answers; `RuntimeError` with the tail of its
    log when it exits first or `timeout_s` passes."""
    assert server.process is not None and server.log is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise PrefectServerUnavailable(
                f"the Prefect server exited with {server.process.returncode} before it was "
                f"healthy; the end of its log ({server.log}):\n{log_tail(server.log)}"
            )
        if probe_server(server.url) == "prefect":
            return
        time.sleep(0.2)
    raise PrefectServerUnavailable(
        f"the Prefect server was not healthy after {timeout_s:.0f} s; the end of its log "
        f"({server.log}):\n{log_tail(server.log)}"
    )


def _start(host: str, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Launch `prefect server start`, its output in `log`."""
    try:
        home = env.get("PREFECT_HOME")
        if home:
            # Prefect creates its home without parents, then fails to open its database.
            Path(home).expanduser().mkdir(parents=True, exist_ok=True)
        log.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting a Prefect server at http://%s:%d (log %s)", host, port, log)
        with open(log, "wb") as out:
            return subprocess.Popen(
                [*_prefect_exe(), "server", "start", "--host", host, "--port", str(port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in the terminal reaches only us, and we stop
                # the server after whatever uses it; killpg then takes its workers along.
                start_new_session=True,
            )
    except OSError as e:
        raise RuntimeError(f"cannot start a Prefect server: {e}") from e


@contextmanager
def local_prefect_server(
    port: int,
    log: Path,
    *,
    host: str = LOCAL_HOST,
    env: Mapping[str, str] | None = None,
    reuse: bool = True,
    timeout_s: float = 120,
) -> Iterator[LocalServer]:
    """`prefect server start --host host --port port`, its output in `log`; yields once
    /api/health answers and stops the server (its whole process group) on exit.

    With `reuse`, a Prefect server already answering there is used as is (and left
    running). Anything else on the port is a `RuntimeError`, as is a server that exits or
    stays unhealthy (with the end of its log).
    """
    url = f"http://{host}:{port}"
    found = probe_server(url)
    if found == "prefect" and reuse:
        logger.info("a Prefect server already answers at %s: using it", url)
        yield LocalServer(url, None, None)
        return
    if found != "free":
        what = "another Prefect server" if found == "prefect" else "something that is not Prefect"
        raise RuntimeError(
            f"port {port} on {host} is taken by {what} ({url}/api/health); stop it or "
            "choose another port (--port)"
        )
    proc = _start(host, port, log, server_env(url, env))
    server = LocalServer(url, proc, log)
    try:
        _wait_healthy(server, timeout_s)
        yield server
    finally:
        logger.info("stopping the Prefect server at %s", url)
        stop_process_group(proc)

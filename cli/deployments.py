"""`towerflow serve`: towerflow's deployments from ``prefect.yaml`` served with
``prefect.serve`` (the same names, cron schedules, event triggers and parameters a worker
would get from ``prefect deploy``, run by one process with no work pool or worker) and
the alert automations applied (``cli.alerts``); and a local ``prefect server start`` (API
and UI) to serve against, for ``towerflow serve --ui`` and the live tests.

Heavy imports (Prefect, the flows) happen inside the functions. Register with
``app.command("serve")(serve_command)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import typer
import yaml

from cli.alerts import AlertBlockOpt, StaleHoursOpt, WebhookUrlOpt
from cli.errors import PrefectServerUnavailable
from cli.options import RootOpt, apply_prefect_defaults, fail, root_path, setup_logging

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

__all__ = [
    "LocalServer",
    "check_server",
    "deployments_from_yaml",
    "load_deployment_specs",
    "local_prefect_server",
    "probe_server",
    "serve_command",
    "stop_process_group",
]

logger = logging.getLogger(__name__)

LOCAL_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 4200


def load_deployment_specs(path: Path) -> list[dict[str, Any]]:
    """The `deployments` of a prefect.yaml (YAML anchors resolved)."""
    try:
        spec = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    deployments = spec.get("deployments") if isinstance(spec, dict) else None
    if not isinstance(deployments, list) or not deployments:
        raise ValueError(f"{path}: no `deployments` list")
    return deployments


def _module(entrypoint: str) -> str:
    """`flows/new_items.py:new_items` -> `flows.new_items`."""
    return entrypoint.partition(":")[0].removesuffix(".py").replace("/", ".")


def _flow(entrypoint: str) -> Any:
    """The flow object of an entrypoint, imported by module path (so the runner's
    subprocess can import it too)."""
    return getattr(importlib.import_module(_module(entrypoint)), entrypoint.partition(":")[2])


def deployments_from_yaml(path: Path, names: list[str] | None = None) -> list[RunnerDeployment]:
    """A `RunnerDeployment` per deployment of `path` (those in `names`, default all)."""
    from prefect.events import DeploymentEventTrigger
    from prefect.schedules import Cron

    out = []
    for spec in load_deployment_specs(path):
        if names is not None and spec["name"] not in names:
            continue
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
            for s in spec.get("schedules") or []
        ]
        triggers = []
        for t in spec.get("triggers") or []:
            if t.get("type", "event") != "event":
                raise ValueError(f"{path}: {spec['name']}: only event triggers are served")
            triggers.append(DeploymentEventTrigger(**{k: v for k, v in t.items() if k != "type"}))
        out.append(
            _flow(spec["entrypoint"]).to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters"),
                schedules=schedules or None,
                triggers=triggers or None,
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    if names is not None and len(out) != len(names):
        known = [d["name"] for d in load_deployment_specs(path)]
        raise ValueError(f"{path}: deployments {names} not all found (has {known})")
    return out


def check_server(api_url: str | None, timeout_s: float = 5.0) -> str:
    """The API URL if a Prefect server answers its health check there, else
    `PrefectServerUnavailable` (a RuntimeError; exit 8) saying what to do (events sent
    without it go to a private temporary server)."""
    import httpx

    if not api_url:
        raise PrefectServerUnavailable(
            "PREFECT_API_URL is not set: start a server (`prefect server start --host "
            "127.0.0.1`) and export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    try:
        response = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as e:
        raise PrefectServerUnavailable(
            f"no Prefect server answers at {api_url}: {e}; start one (`prefect server start "
            "--host 127.0.0.1`) or fix PREFECT_API_URL"
        ) from e
    return api_url


# --- A local Prefect server (API + UI) as a subprocess -------------------------------------


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


# --- `towerflow serve` -----------------------------------------------------------------------


def _default_prefect_yaml() -> Path:
    here = Path.cwd() / "prefect.yaml"
    return here if here.is_file() else Path(__file__).resolve().parents[1] / "prefect.yaml"


UiOpt = Annotated[
    bool,
    typer.Option(
        "--ui",
        help="Start a local Prefect server with its UI on 127.0.0.1:--port (or reuse the "
        "one answering there) and serve against it; Ctrl-C stops both.",
    ),
]
PortOpt = Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the --ui server.")]


def _server_log() -> Path:
    """Where `serve --ui` keeps the server's output: beside its database."""
    home = os.environ.get("PREFECT_HOME") or "~/.prefect"
    return Path(home).expanduser() / "towerflow-ui-server.log"


def _exit_on_sigterm(stack: ExitStack) -> None:
    """Turn SIGTERM into SystemExit until Prefect's runner installs its own (graceful)
    handler: Python's default would kill us without stopping the server we started. The
    previous handler is back when `stack` closes."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    stack.callback(signal.signal, signal.SIGTERM, signal.signal(signal.SIGTERM, handler))


def serve_command(
    root: RootOpt = None,
    prefect_yaml: Annotated[
        Path | None,
        typer.Option(
            "--prefect-yaml",
            help="Deployments to serve [default: ./prefect.yaml, else the project's].",
            show_default=False,
        ),
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Serve only these deployments (repeatable; default: all of them).",
            show_default=False,
        ),
    ] = None,
    poll_interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between polls for runs to start.")
    ] = 0.25,
    ui: UiOpt = False,
    port: PortOpt = 4200,
    alert_webhook_url: WebhookUrlOpt = None,
    alert_block: AlertBlockOpt = None,
    alert_stale_hours: StaleHoursOpt = None,
) -> None:
    """Serve the deployments of prefect.yaml (nightly on its cron, new-items on its event
    triggers) against the server at PREFECT_API_URL, with no work pool or worker, and
    apply the alert automations there (`towerflow alerts apply`; none without a webhook
    URL or block).

    Each flow run is a child process; an event's run starts within about
    `--poll-interval` of the trigger firing (Prefect's default poll is 10 s).

    With --ui, the server is a local `prefect server start` that stops with this command.
    """
    from cli.alerts import alert_settings, apply_configured_alerts

    apply_prefect_defaults()
    # Our own log lines outside flow runs (the server starting, stopping) stay local,
    # instead of a warning each that Prefect's API log handler cannot send them.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # Flow runs are subprocesses of this process: they find the store through the env.
    os.environ["TOWERFLOW_ROOT"] = str(root_path(root))
    setup_logging()
    alerts = alert_settings(alert_webhook_url, alert_block, alert_stale_hours)
    with ExitStack() as stack:
        if ui:
            _exit_on_sigterm(stack)
            try:
                server = stack.enter_context(local_prefect_server(port, _server_log()))
            except RuntimeError as e:
                raise fail(str(e)) from None
            previous = os.environ.get("PREFECT_API_URL")
            if previous and previous.rstrip("/") != server.api_url:
                typer.echo(f"--ui: PREFECT_API_URL={previous} ignored", err=True)
            # Before Prefect is imported: its settings are read from the env once.
            os.environ["PREFECT_API_URL"] = server.api_url
            started = f"server log {server.log}" if server.log else "a server already running"
            typer.echo(f"Prefect UI: {server.url} ({started})", err=True)
        try:
            api_url = check_server(os.environ.get("PREFECT_API_URL"))
            spec_path = prefect_yaml or _default_prefect_yaml()
            deployments = deployments_from_yaml(spec_path, only)
        except (RuntimeError, ValueError) as e:
            raise fail(str(e)) from None
        apply_configured_alerts(alerts, api_url)
        from prefect import serve

        # Not a logger: outside a flow run Prefect's API log handler warns about every record.
        typer.echo(
            f"serving {[d.name for d in deployments]} from store {os.environ['TOWERFLOW_ROOT']}",
            err=True,
        )
        # Returns on Ctrl-C or SIGTERM (the runner's handler), then the server stops.
        serve(*deployments, query_seconds=poll_interval)

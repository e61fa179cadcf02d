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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

import typer
import yaml

from cli.alerts import AlertBlockOpt, StaleHoursOpt, WebhookUrlOpt
from cli.errors import PrefectServerUnavailable
from cli.options import RootOpt, apply_prefect_defaults, fail, root_path, setup_logging
from cli.prefect_server import local_prefect_server

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

__all__ = [
    "check_server",
    "deployments_from_yaml",
    "load_deployment_specs",
    "serve_command",
]

logger = logging.getLogger(__name__)


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


def deployments_from_yaml(
    path: Path, names: list[str] | None = None, untriggered: frozenset[str] = frozenset()
) -> list[RunnerDeployment]:
    """A `RunnerDeployment` per deployment of `path` (those in `names`, default all); those
    named in `untriggered` without their event triggers (serving them removes the trigger
    automations an earlier serve registered)."""
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
        for t in [] if spec["name"] in untriggered else spec.get("triggers") or []:
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
ItemsEventsOpt = Annotated[
    Literal["stream", "trigger"],
    typer.Option(
        "--items-events",
        help="stream: a long-lived consumer in this process applies items events in "
        "batches (`new-items-batch` runs; the new-items deployment is served without its "
        "triggers, for manual runs); trigger: each event triggers a new-items run in a new "
        "process, as `prefect deploy` + a worker does.",
    ),
]


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


NEW_ITEMS: Final = "new-items"  # the deployment the items consumer stands in for


@contextmanager
def _items_consumer(root: str) -> Iterator[None]:
    """The items consumer (``flows.items_consumer``) reading events until the block ends."""
    from flows.items_consumer import ItemsConsumer

    consumer = ItemsConsumer(root)
    try:
        consumer.start()
    except RuntimeError as e:
        raise fail(str(e)) from None
    typer.echo("items events: applied by the consumer in this process (--items-events)", err=True)
    try:
        yield
    finally:
        consumer.stop()


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
    items_events: ItemsEventsOpt = "stream",
) -> None:
    """Serve the deployments of prefect.yaml (nightly on its cron, new-items on its event
    triggers) against the server at PREFECT_API_URL, with no work pool or worker, and
    apply the alert automations there (`towerflow alerts apply`; none without a webhook
    URL or block).

    Each deployment's flow run is a child process; a triggered run starts within about
    `--poll-interval` of the trigger firing (Prefect's default poll is 10 s). Items events
    are applied by a consumer in this process (`--items-events stream`, the default; it
    first reads back the events sent while it was not running) or by triggered runs.

    With --ui, the server is a local `prefect server start` that stops with this command.
    """
    from cli.alerts import alert_settings, apply_configured_alerts

    apply_prefect_defaults()
    # Our own log lines outside flow runs (the server starting, stopping) stay local,
    # instead of a warning each that Prefect's API log handler cannot send them.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # Flow runs are subprocesses of this process: they find the store through the env.
    os.environ["TOWERFLOW_ROOT"] = str(root_path(root))
    setup_logging(verbose=True)  # a long-running server: its INFO lines (each batch) show
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
            stream = items_events == "stream"
            untriggered = frozenset({NEW_ITEMS} if stream else ())
            deployments = deployments_from_yaml(spec_path, only, untriggered)
        except (RuntimeError, ValueError) as e:
            raise fail(str(e)) from None
        apply_configured_alerts(alerts, api_url)
        from prefect import serve

        if stream:
            stack.enter_context(_items_consumer(os.environ["TOWERFLOW_ROOT"]))

        # Not a logger: outside a flow run Prefect's API log handler warns about every record.
        typer.echo(
            f"serving {[d.name for d in deployments]} from store {os.environ['TOWERFLOW_ROOT']}",
            err=True,
        )
        # Returns on Ctrl-C or SIGTERM (the runner's handler), then the server stops.
        serve(*deployments, query_seconds=poll_interval)
